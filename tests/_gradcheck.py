"""One gradcheck for every recurrent layer: float64, random weights in ±0.8 (gates away from
saturation), a padded batch of 3 sequences of lengths 4, 2, 3, every output checked."""

import torch
from torch.utils._pytree import tree_leaves


def layer_gradcheck(layer: torch.nn.Module) -> bool:
    """gradcheck of ``layer(x, lengths)`` (I = 3) with respect to x and every parameter."""
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.8, 0.8)
    x = torch.randn(3, 4, 3, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def f(x, *ps):
        return tuple(tree_leaves(torch.func.functional_call(layer, dict(zip(names, ps)), (x, lengths))))

    return torch.autograd.gradcheck(f, (x, *params))
