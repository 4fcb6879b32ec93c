"""Inference: ONNX detectors (YOLOX, YOLOv7) and the replicated Redis Streams workers."""
