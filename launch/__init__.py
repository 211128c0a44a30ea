"""SageMaker launchers for cola-bert, run from the repository root.

- `python -m launch.deploy`: deploy an exported model.tar.gz to a SageMaker endpoint (or delete one).
- `launch.aws`: shared AWS helpers (sessions, region/role/bucket resolution, error paragraphs, dry-run output).
"""
