"""Reading model files: GGUF, safetensors directories and Hugging Face repos."""
