"""The request path below the InferenceService: runners, statistics, batching helpers."""
