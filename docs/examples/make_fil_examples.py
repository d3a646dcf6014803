"""Write the example FIL model of docs/examples/model_repository (served by nereid-fil).

- ``fil_xgboost``: a tiny XGBoost binary classifier (4 features, 4 trees of depth 2, trained on
  ``label = x0 + x1 > 0``) saved as ``xgboost.json``, served with ``predict_proba`` (output
  ``[2]``: P(0), P(1)), dynamic batching and two CPU instances.

The model file is committed; run this again (``pip install xgboost-cpu``) only to change it:

    python docs/examples/make_fil_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost as xgb

REPOSITORY = Path(__file__).resolve().parent / "model_repository"

CONFIG = """\
# A tiny XGBoost classifier (made by docs/examples/make_fil_examples.py), served by the
# nereid-fil plugin as Triton's FIL backend would: input__0 FP32 [4] -> output__0 FP32 [2]
# (class probabilities).
backend: "fil"
max_batch_size: 256
input [ { name: "input__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "output__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
parameters [
  { key: "model_type" value: { string_value: "xgboost_json" } },
  { key: "output_class" value: { string_value: "true" } },
  { key: "predict_proba" value: { string_value: "true" } },
  { key: "cpu_nthread" value: { string_value: "1" } }
]
"""


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    model = xgb.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1, random_state=0).fit(x, y)
    folder = REPOSITORY / "fil_xgboost"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    model.get_booster().save_model(str(folder / "1" / "xgboost.json"))
    (folder / "config.pbtxt").write_text(CONFIG)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
