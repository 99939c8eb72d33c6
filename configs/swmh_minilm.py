"""Mental-health task (CMHL_SPEC section 2) on the embedded all-MiniLM-L6-v2 encoder: runs
offline. Data as in swmh_roberta (SWMH on request, or ../shared/data/reddit_mh).

MiniLM is 6x smaller than roberta-base, so it takes a larger learning rate; the batch of 16
divides over 8 devices.
"""

from configs import swmh_roberta


def get_config():
    config = swmh_roberta.get_config()
    config.model.encoder = "minilm"
    config.optim.lr = 1e-4
    config.batch_size = 16
    # The offline config runs anywhere: without WordNet (nltk data or Debian's wordnet-base)
    # it trains without synonym substitution and says so in the log; deletion stays on.
    config.augment.allow_missing_wordnet = True
    return config
