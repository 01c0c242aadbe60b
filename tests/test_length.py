"""The one length-fitting rule (data/length.py) and its three users agree."""
import numpy as np

from megatron_sicog.data.length import expanded_length, fit_prefix

IMG = 9


def _expanded(tokens, k):
    return sum(k if t == IMG else 1 for t in tokens)


def test_fit_prefix_is_the_longest_fitting_prefix():
    rng = np.random.default_rng(0)
    for _ in range(200):
        toks = rng.choice([1, 2, 3, IMG], size=int(rng.integers(1, 30)), p=[0.3, 0.3, 0.3, 0.1])
        k, limit = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        keep, n_img = fit_prefix(toks, limit, IMG, k)
        assert _expanded(toks[:keep], k) <= limit
        assert keep == len(toks) or _expanded(toks[:keep + 1], k) > limit
        assert n_img == int((toks[:keep] == IMG).sum())
        assert expanded_length(len(toks), int((toks == IMG).sum()), k) == _expanded(toks, k)
    assert fit_prefix([1, 2, 3], 2, None, 4) == (2, 0)


def test_collate_cuts_an_image_that_does_not_fit():
    from megatron_sicog.model.batch import collate

    img = np.zeros((2, 2, 3), np.uint8)
    sample = {"tokens": np.array([1, 2, IMG, 3, IMG, 4]), "loss_mask": np.array([0, 0, 0, 1, 0, 1]),
              "images": [img, img]}
    b = collate([sample], seq_length=7, image_token_id=IMG, num_image_tokens=3, pad_id=0)
    # 1 2 [IMG x3] 3 fit in 8 positions; the second image (3 more) does not: it and the 4 are cut
    assert b.images.shape[0] == 1
    assert b.input_ids[0].tolist() == [1, 2, IMG, IMG, IMG, 3, 0]
    assert b.loss_mask[0].tolist() == [0, 0, 0, 0, 1, 0, 0]
