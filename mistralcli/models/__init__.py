"""Model architectures, registered by the name GGUF (`general.architecture`) and HF configs use."""

ARCHITECTURES: dict[str, type] = {}
# Hugging Face `model_type` / `architectures[0]` -> our architecture name.
HF_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "qwen2": "qwen2",
    "Qwen2ForCausalLM": "qwen2",
    "gemma3_text": "gemma3",
    "Gemma3ForCausalLM": "gemma3",
    "mixtral": "mixtral",
    "MixtralForCausalLM": "mixtral",
    "qwen2_moe": "qwen2moe",
    "Qwen2MoeForCausalLM": "qwen2moe",
    "phi3": "phi3",
    "Phi3ForCausalLM": "phi3",
    "qwen3": "qwen3",
    "Qwen3ForCausalLM": "qwen3",
    "qwen3_moe": "qwen3moe",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "bert": "bert",
    "BertModel": "bert",
}


def register(name: str):
    def wrap(cls):
        ARCHITECTURES[name] = cls
        cls.architecture = name
        return cls

    return wrap


def get_architecture(name: str):
    """The model class for an architecture name, or None if unsupported."""
    # each registers itself
    from mistralcli.models import bert, gemma3, llama, mixtral, phi3, qwen2, qwen2_moe, qwen3  # noqa: F401

    return ARCHITECTURES.get(name)
