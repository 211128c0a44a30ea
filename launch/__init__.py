"""SageMaker launchers for cola-bert, run from the repository root. One module per command:

- `python -m launch.train`: `cola_bert.train` with the same overrides as a SageMaker training job (or one per sweep
  combination); `python -m launch.train attach=JOB_NAME` follows a job and downloads its model (`launch.attach`).
- `python -m launch.tune`: a SageMaker HyperparameterTuner over the same training job.
- `python -m launch.deploy`: serve an exported model.tar.gz from a SageMaker endpoint (or delete one); its stages
  live in `model_artifact` (check, upload once per sha256, export a training job's model) and `images` (which
  PyTorch serving image).
- `python -m launch.batch`: a SageMaker Batch Transform job over a file of sentences, one JSON line per sentence.

Shared: `session` (region, profile, endpoint, SageMaker session, role, bucket), `errors` (AWS failures → one
paragraph), `validate` (checks before any upload), `console` (output). The script that runs inside the training
container is `cola_bert.sagemaker_entry`, beside the code it runs.
"""
