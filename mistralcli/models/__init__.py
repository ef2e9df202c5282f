"""Model architectures, registered by the name GGUF (`general.architecture`) and HF configs use."""

ARCHITECTURES: dict[str, type] = {}
# Hugging Face `model_type` / `architectures[0]` -> our architecture name.
HF_MODEL_TYPES = {"llama": "llama", "mistral": "llama", "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}


def register(name: str):
    def wrap(cls):
        ARCHITECTURES[name] = cls
        return cls

    return wrap


def get_architecture(name: str):
    """The model class for an architecture name, or None if unsupported."""
    if not ARCHITECTURES:
        from mistralcli.models import llama  # noqa: F401  (registers itself)
    return ARCHITECTURES.get(name)
