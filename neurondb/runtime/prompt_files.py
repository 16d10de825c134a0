"""The file names of a neurondb prompt directory (torch-free: reading a store's results and
the report need them without loading a model)."""

PROMPT_JSON = "neurondb_prompt.json"
PROMPT_TENSORS = "prompt.safetensors"
