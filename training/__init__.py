"""Training: torchrun (DDP) fine-tuning of YOLOX, ONNX export and publishing of model versions."""
