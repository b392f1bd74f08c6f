"""Cost models (FlopsCost: MACs and params, caching) and the loss forms (multiplicative, additive)."""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

import nascore.costs.flops as flops
from nascore.cost import op_key
from nascore.costs.flops import FlopsCost, count_macs
from nascore.objective import Additive, Multiplicative, Objective
from nascore.spaces.fbnet_blocks import make_block


# -- FlopsCost ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cin, cout, k, stride, groups, size", [
    (8, 16, 3, 1, 1, 10),   # plain conv
    (8, 16, 3, 2, 1, 10),   # strided: output 5x5
    (16, 16, 5, 1, 16, 7),  # depth-wise
    (16, 32, 1, 1, 2, 6),   # grouped point-wise
])
def test_conv_macs_equal_the_analytic_count(cin, cout, k, stride, groups, size):
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    out = (size + 2 * (k // 2) - k) // stride + 1
    analytic = cout * (cin // groups) * k * k * out * out
    assert FlopsCost().price(conv, (1, cin, size, size)) == analytic
    assert FlopsCost().price(conv, (3, cin, size, size)) == 3 * analytic  # per batch, as measured


def test_linear_macs():
    assert FlopsCost().measure(nn.Linear(20, 7), (4, 20)) == 4 * 20 * 7


def test_macs_are_counted_with_flop_counter_mode(monkeypatch):
    entered = []

    class Spy(flops.FlopCounterMode):
        def __enter__(self):
            entered.append(self)
            return super().__enter__()

    monkeypatch.setattr(flops, "FlopCounterMode", Spy)
    assert FlopsCost().measure(nn.Conv2d(4, 4, 3, padding=1, bias=False), (1, 4, 5, 5)) == 4 * 4 * 9 * 25
    assert len(entered) == 1


def test_count_macs_restores_training_mode():
    block = make_block("k3_e3", 8, 8, 1).train()
    count_macs(block, torch.zeros(1, 8, 4, 4))
    assert all(m.training for m in block.modules())
    block.eval()
    count_macs(block, torch.zeros(1, 8, 4, 4))
    assert not any(m.training for m in block.modules())


def test_params_metric():
    cost = FlopsCost({"metric": "params"})
    assert cost.unit == "params" and FlopsCost().unit == "MACs"
    conv = nn.Conv2d(8, 16, 3, bias=True)
    assert cost.price(conv, (1, 8, 10, 10)) == 16 * 8 * 9 + 16
    block = make_block("k3_e3", 8, 16, 2)  # pw 8->24, dw 3x3 on 24, pwl 24->16, 3 BNs (weight + bias)
    assert cost.price(block, (1, 8, 8, 8)) == 8 * 24 + 24 * 9 + 24 * 16 + 2 * (24 + 24 + 16)
    assert cost.price(make_block("skip", 8, 8, 1), (1, 8, 8, 8)) == 0
    with pytest.raises(ValidationError):
        FlopsCost({"metric": "latency"})


# -- caching -----------------------------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = FlopsCost.measure

    def measure(self, module, input_shape):
        calls.append((op_key(module), input_shape))
        return real(self, module, input_shape)

    monkeypatch.setattr(FlopsCost, "measure", measure)
    return calls


def test_price_is_cached_by_op_key_and_shape(counted):
    cost = FlopsCost()
    a = make_block("k3_e3", 8, 8, 1)
    first = cost.price(a, (1, 8, 6, 6))
    assert cost.price(a, (1, 8, 6, 6)) == first
    assert len(counted) == 1
    # another module with the same configuration: same key, not measured again
    assert cost.price(make_block("k3_e3", 8, 8, 1), [1, 8, 6, 6]) == first
    assert len(counted) == 1
    # a new shape or a new configuration is measured
    cost.price(a, (1, 8, 12, 12))
    cost.price(make_block("k5_e3", 8, 8, 1), (1, 8, 6, 6))
    assert len(counted) == 3
    assert counted[-1] == ("fbnet:k5_e3:8>8:s1:d8", (1, 8, 6, 6))


def test_block_keys_tell_divisors_apart():
    # 12 * 3 = 36 mid channels: 40 when rounded to 8, 36 when rounded to 4: different ops, different prices
    cost = FlopsCost({"metric": "params"})
    a, b = make_block("k3_e3", 12, 12, 1, divisor=8), make_block("k3_e3", 12, 12, 1, divisor=4)
    assert op_key(a) != op_key(b)
    assert cost.price(a, (1, 12, 4, 4)) != cost.price(b, (1, 12, 4, 4))


def test_modules_without_op_key_are_keyed_by_repr(counted):
    cost = FlopsCost()
    cost.price(nn.Conv2d(4, 8, 3), (1, 4, 5, 5))
    cost.price(nn.Conv2d(4, 8, 3), (1, 4, 5, 5))
    assert len(counted) == 1
    cost.price(nn.Conv2d(4, 8, 5), (1, 4, 5, 5))
    assert len(counted) == 2


def test_caches_are_per_cost_model(counted):
    FlopsCost().price(nn.Conv2d(4, 8, 3), (1, 4, 5, 5))
    FlopsCost().price(nn.Conv2d(4, 8, 3), (1, 4, 5, 5))
    assert len(counted) == 2


# -- loss forms --------------------------------------------------------------------------------
def test_multiplicative_defaults_are_fbnets():
    m = Multiplicative()
    assert (m.form, m.alpha, m.beta) == ("multiplicative", 0.2, 0.6)


@pytest.mark.parametrize("ce, c", [(2.3, 3.0e6), (0.7, 250e6), (1.0, 12.0)])
def test_multiplicative_value_and_gradient(ce, c):
    task = torch.tensor(ce, dtype=torch.float64, requires_grad=True)
    cost = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    loss = Multiplicative()(task, cost)
    assert loss.item() == pytest.approx(ce * 0.2 * math.log(c) ** 0.6, rel=1e-12)
    loss.backward()
    # d/dc [ce * a * log(c)^b] = ce * a * b * log(c)^(b-1) / c
    assert cost.grad.item() == pytest.approx(ce * 0.2 * 0.6 * math.log(c) ** -0.4 / c, rel=1e-10)
    assert task.grad.item() == pytest.approx(0.2 * math.log(c) ** 0.6, rel=1e-12)


def test_multiplicative_custom_alpha_beta():
    m = TypeAdapter(Objective).validate_python({"form": "multiplicative", "alpha": 0.5, "beta": 1.5})
    assert isinstance(m, Multiplicative)
    assert m(torch.tensor(2.0), torch.tensor(100.0)).item() == pytest.approx(2.0 * 0.5 * math.log(100) ** 1.5,
                                                                             rel=1e-6)


def test_additive_with_lambda_alias():
    a = TypeAdapter(Objective).validate_python({"form": "additive", "lambda": 0.5, "scale": 1e3})
    assert isinstance(a, Additive) and a.lambda_ == 0.5 and a.scale == 1e3
    task = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    cost = torch.tensor(4000.0, dtype=torch.float64, requires_grad=True)
    loss = a(task, cost)
    assert loss.item() == pytest.approx(1.2 + 0.5 * 4000 / 1e3)
    loss.backward()
    assert cost.grad.item() == pytest.approx(0.5 / 1e3) and task.grad.item() == 1.0
    # the alias is what a spec writes, and what a dump gives back
    assert a.model_dump(by_alias=True)["lambda"] == 0.5
    assert Additive(form="additive", lambda_=0.3).lambda_ == 0.3
    defaults = Additive(form="additive")
    assert (defaults.lambda_, defaults.scale) == (0.1, 1e6)


def test_objective_forms_are_validated():
    with pytest.raises(ValidationError):
        TypeAdapter(Objective).validate_python({"form": "exponential"})
    with pytest.raises(ValidationError):
        TypeAdapter(Objective).validate_python({"form": "multiplicative", "alpha": 0})
    with pytest.raises(ValidationError):
        TypeAdapter(Objective).validate_python({"form": "additive", "lambda": -1})
    with pytest.raises(ValidationError):
        TypeAdapter(Objective).validate_python({"form": "additive", "lamda": 1})
