"""Image models of the seed papers, picked with ``-o model=NAME`` on the image problems.

* ``lenet5``: LeCun et al. 1998 as the APAM paper trains it on MNIST (Xu et al., arXiv
  2002.09095, section 5): conv 5x5 (6, padding 2) -> max-pool -> conv 5x5 (16) -> max-pool ->
  120 -> 84 -> classes, ReLU activations.
* ``hogwild``: the CNN of PyTorch's ``mnist_hogwild`` example: conv 5x5 (10) -> max-pool ->
  ReLU -> conv 5x5 (20) -> Dropout2d -> max-pool -> ReLU -> 50 -> dropout -> classes.
* ``cnn``: a small CNN for the leader experiments (Teng et al., NeurIPS 2019, CIFAR-10 CNNs,
  scaled to two cores): two conv 3x3 blocks with BatchNorm and max-pool, then one linear layer.

Every factory takes the input shape ``(channels, height, width)`` and the number of classes, so
one model runs on 28x28 grey images and on 32x32 colour ones; it returns logits.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MODELS", "lenet5", "hogwild_cnn", "small_cnn", "image_model"]


def _flat_size(features: nn.Module, shape: tuple[int, int, int]) -> int:
    import torch
    with torch.no_grad():
        return int(features(torch.zeros(1, *shape)).numel())


class _Net(nn.Module):
    """``features`` then ``classifier`` on the flattened features."""

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def lenet5(shape: tuple[int, int, int], classes: int) -> nn.Module:
    """LeNet5: 2 conv + 3 linear layers, ReLU, max-pool (61,706 parameters on 28x28)."""
    features = nn.Sequential(
        nn.Conv2d(shape[0], 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    n = _flat_size(features, shape)
    return _Net(features, nn.Sequential(nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, classes)))


def hogwild_cnn(shape: tuple[int, int, int], classes: int) -> nn.Module:
    """The mnist_hogwild CNN: 2 conv (10, 20 channels), Dropout2d, 2 linear (50), dropout 0.5."""
    features = nn.Sequential(
        nn.Conv2d(shape[0], 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU())
    n = _flat_size(features, shape)
    return _Net(features, nn.Sequential(nn.Linear(n, 50), nn.ReLU(), nn.Dropout(), nn.Linear(50, classes)))


def small_cnn(shape: tuple[int, int, int], classes: int) -> nn.Module:
    """Two conv 3x3 blocks (16, 32 channels) with BatchNorm, ReLU and max-pool; one linear layer."""
    features = nn.Sequential(
        nn.Conv2d(shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
    return _Net(features, nn.Linear(_flat_size(features, shape), classes))


MODELS = {"lenet5": lenet5, "hogwild": hogwild_cnn, "cnn": small_cnn}


def image_model(name: str, shape: tuple[int, int, int], classes: int) -> nn.Module:
    """The named model for images of ``shape`` (module-level, so partials of it pickle)."""
    return MODELS[name](shape, classes)
