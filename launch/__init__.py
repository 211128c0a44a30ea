"""SageMaker launchers for cola-bert, run from the repository root.

- `python -m launch.train`: run `cola_bert.train` with the same overrides as a SageMaker training job (or a sweep).
- `python -m launch.tune`: a SageMaker HyperparameterTuner over the same training job, maximising val MCC.
- `python -m launch.deploy`: deploy an exported model.tar.gz to a SageMaker endpoint (or delete one).
- `launch.entry`: the script that runs inside the training container (staged by `launch.source_dir`).
- `launch.aws`: shared AWS helpers (sessions, region/role/bucket resolution, error paragraphs, dry-run output).
"""
