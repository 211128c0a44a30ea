"""Fine-tune BERT-family sentence classifiers on CoLA (Lightning + Hydra), export TorchScript, serve on SageMaker."""

__version__ = "0.1.0"
