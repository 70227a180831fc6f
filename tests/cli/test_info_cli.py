import json

from omnipath_lvlm.cli import main

# Published parameter counts (millions): SigLIP-SO400M/14-384 vision tower, UNI ViT-L/16,
# Vicuna-7B (LLaMA-2 7B), ResNet-18, SAM's mask decoder.
PUBLISHED_M = {"siglip_so400m_vision": 428.2, "uni_vit_l16": 303.3, "vicuna_7b": 6738.4, "resnet18": 11.7, "sam_decoder": 4.1}


def test_info_reports_each_component_of_omnipath_7b(capsys):
    assert main(["info", "--config", "omnipath-7b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    params = info["parameters"]
    for key in ("vision.siglip", "vision.uni", "projector", "llm", "mask_encoder", "mask_decoder"):
        assert params[key] > 0
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    published = sum(PUBLISHED_M.values()) * 1e6
    assert abs(params["total"] - published) / published < 0.01
    assert info["image_tokens_per_image"] == 729


def test_info_text_output_for_tiny(capsys):
    assert main(["info", "--config", "test-tiny"]) == 0
    out = capsys.readouterr().out
    assert "36 image tokens per image" in out and "total" in out
