"""Names of the files a saved model and a training checkpoint consist of. Torch-free, so web
processes can check what is stored without loading the ML stack."""

MODEL_WEIGHTS = "model.safetensors"
MODEL_METADATA = "model-metadata.json"
# The network exported to ONNX, checked against torch when saved: what a bundle's serve.py
# runs with ONNX Runtime alone. Absent for a network that does not export.
MODEL_ONNX = "model.onnx"
TRAINER_STATE = "trainer-state.pt"
CHECKPOINT_METADATA = "checkpoint-metadata.json"

MODEL_FILES = (MODEL_WEIGHTS, MODEL_METADATA)
CHECKPOINT_FILES = (MODEL_WEIGHTS, TRAINER_STATE, CHECKPOINT_METADATA)
