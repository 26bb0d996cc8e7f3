"""Fixtures for the explainers tests: one trained synthetic CNN per test session.

The CNN is trained once (:func:`explainers.worlds.synthetic.train_cnn_cached`) into a folder
under the session's base temporary directory; every suite that asks for the same config
(``tests/studies`` uses the same helper and folder) loads those weights instead of training.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def synthetic_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session-wide cache folder for trained synthetic CNNs."""
    path = tmp_path_factory.getbasetemp() / "synthetic-cnn-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def trained_synthetic_cnn(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(model, metrics, weights_path)`` of the unbiased synthetic CNN, trained once per session."""
    from explainers.worlds import synthetic

    return synthetic.train_cnn_cached(synthetic_cache_dir(tmp_path_factory), biased=False, seed=0,
                                      config=synthetic.QUICK_CONFIG)
