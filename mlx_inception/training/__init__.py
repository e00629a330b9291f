"""Training: TensorFlow-style RMSProp, the paper's recipe, the trainer, data parallelism."""
