"""The model's runtime: everything a registered model runs under `mlflow models serve` and
`mlflow.pyfunc`, and nothing of training, tracking, tuning, the web page or the team stack.

The registered model is an MLflow *models-from-code* pyfunc: its Python code is this package alone
(`mnist_runtime/pyfunc_model.py` the entry; `mnist_cnn.packaging` logs it), its network the `.keras`
file, loaded in safe mode. Nothing is pickled. It has no input signature, so MLflow passes the
request through untouched and this module validates it.

Input (JSON body of `POST /invocations`), up to `MAX_BATCH` images:
- raw 0-255 pixels, integers or floats: `{"inputs": [...]}` of shape (N, 28, 28), (N, 28, 28, 1)
  or (N, 784) (also `instances`, or `dataframe_split` with 784 columns);
- image files: `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}` or
  `{"dataframe_records": [{"image": "<base64>"}, ...]}` or `{"inputs": {"image": ["<base64>", ...]}}`:
  PNG, JPEG or BMP of any size and mode, brought to MNIST's form by `mnist_runtime.images`;
- compact bulk pixels: `{"inputs": {"pixels_b64": "<base64>"}}`, the base64 of N*784 raw uint8
  bytes (N images of 28x28, row-major), or a `pixels_b64` column holding one such string per row.

Output, one record per image in request order:
`{"predictions": [{"digit": 7, "confidence": 0.998, "probabilities": [10 floats, digits 0-9],
"sure": true, "answer": "7"}, ...]}`; below the model's calibrated abstain threshold `sure` is
false and `answer` is "not sure" (`digit` still holds the top digit).

Bad input is an MlflowException(INVALID_PARAMETER_VALUE): the scoring server answers HTTP 400 with
`{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}`. Inside the scoring server,
`guard.install` also turns what MLflow would answer with a 500 into a 4xx: a missing
Content-Type (415), a body over `MAX_BODY_BYTES` (413), JSON nested too deeply (400).

Modules: `images` and `paper` (a user's image files to MNIST's form), `decode` (requests to pixels,
pure), `network` (loading and calling the Keras network), `calibration` (the record in the model
file and "not sure"), `pyfunc` (the model class), `guard` (the scoring-server guard), `errors`,
`pyfunc_model` (the models-from-code entry). It imports nothing from `mnist_cnn`.
"""
