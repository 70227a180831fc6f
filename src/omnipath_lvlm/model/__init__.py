"""OmniPath model components."""
from omnipath_lvlm.model.omnipath import EncodedImages, GenerationResult, OmniPathForConditionalGeneration, OmniPathOutput

__all__ = ["EncodedImages", "GenerationResult", "OmniPathForConditionalGeneration", "OmniPathOutput"]
