"""Deployment: a found, trained arch as a file to ship (``export``: ONNX, torch.export, TorchScript, checked against
eager; ``quantize``: int8 with ONNX Runtime) and as a timm model (``timm_models``)."""
