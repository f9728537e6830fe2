"""Helpers of the capture tests: the model state a capture must restore, and leftover registrations."""

from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from glimpse.capture import CAPTURE_PREFIX


def model_state(model):
    return (model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation,
            model.training, [p.requires_grad for p in model.parameters()],
            len(model.get_input_embeddings()._forward_hooks))


def leftover_registrations():
    """glimpse names in every mapping transformers looks attention or mask functions up in (the
    class-level mappings are private: read here only to prove absence)."""
    mappings = (AttentionInterface._global_mapping, ALL_ATTENTION_FUNCTIONS, ALL_ATTENTION_FUNCTIONS._local_mapping,
                AttentionMaskInterface._global_mapping, ALL_MASK_ATTENTION_FUNCTIONS,
                ALL_MASK_ATTENTION_FUNCTIONS._local_mapping)
    return sorted({name for mapping in mappings for name in mapping if name.startswith(CAPTURE_PREFIX)})
