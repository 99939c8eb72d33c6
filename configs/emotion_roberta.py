"""The paper's emotion setting: roberta-base from the Hugging Face Hub (CMHL_SPEC 1.4)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.encoder = "roberta-base"
    return config
