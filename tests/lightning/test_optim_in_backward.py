"""optimizer.in_backward: the updates of ordinary AdamW (the reference: torch.optim.AdamW stepped after a full
backward), with each gradient freed the moment it is used; checkpoints interchangeable; invalid combinations
fail at composition."""

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from longdoc.config import ConfigError
from longdoc.train import validate_config
from longdoc.optim import OptimizerInBackward
from longdoc.models import Encoder

N_STEPS = 3


def _model(attention: str, reversible: bool) -> torch.nn.Module:
    attn = {"lsh": {"name": "lsh", "bucket_size": 4, "n_hashes": 2},
            "local_global": {"name": "local_global", "attention_window": 4},
            "full": {"name": "full"}}[attention]
    torch.manual_seed(0)
    enc = Encoder(vocab_size=11, d_model=16, n_heads=2, depth=3, d_ff=32, attention=attn, max_seq_len=24,
                  dropout=0.1, reversible=reversible, chunk_size_feed_forward=5,
                  position={"name": "axial", "axial_shape": [4, 6], "axial_dims": [8, 8]})
    return torch.nn.Sequential(enc).double()


def _adamw(model):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.98), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / N_STEPS)  # lr changes every step
    return opt, sched


def _loss(model, step):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(1, 11, (2, 21), generator=g)
    pad = torch.ones(2, 21, dtype=torch.bool)
    pad[1, 15:] = False
    out = model[0](ids, pad, None)
    return F.mse_loss(out, torch.zeros_like(out).normal_(generator=g))


def _train(model, fused: bool, steps=range(N_STEPS), opt=None, sched=None):
    if opt is None:
        opt, sched = _adamw(model)
    hook = OptimizerInBackward(opt) if fused else None
    for s in steps:
        torch.manual_seed(100 + s)  # dropout masks: the same in both runs
        _loss(model, s).backward()
        if fused:
            assert all(p.grad is None for p in model.parameters()), "every gradient is freed once used"
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    if hook is not None:
        assert hook.n_steps == len(list(steps)) * sum(1 for _ in model.parameters())
        hook.remove()
    return opt, sched


@pytest.mark.parametrize("attention,reversible", [("lsh", True), ("local_global", True), ("full", False), ("lsh", False)])
def test_same_parameters_and_state_as_adamw_float64(attention, reversible):
    ref, fused = _model(attention, reversible), _model(attention, reversible)
    opt_ref, _ = _train(ref, fused=False)
    opt_fused, _ = _train(fused, fused=True)
    moved = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), _model(attention, reversible).parameters()))
    assert moved > 1e-3, "the steps must change the weights for the comparison to mean anything"
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)
        sa, sb = opt_ref.state[a], opt_fused.state[b]
        assert float(sa["step"]) == float(sb["step"]) == N_STEPS
        torch.testing.assert_close(sb["exp_avg"], sa["exp_avg"], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=1e-10, atol=1e-18)


def test_no_two_gradients_alive_at_once():
    """Ordinary backward keeps every gradient until optimizer.step(); in_backward frees each one in its hook."""
    for fused, expect_max in ((False, None), (True, 0)):
        model = _model("lsh", True)
        opt, _ = _adamw(model)
        hook = OptimizerInBackward(opt) if fused else None
        params = list(model.parameters())
        seen = []
        for p in params:  # runs after OptimizerInBackward's hook (hooks run in registration order)
            p.register_post_accumulate_grad_hook(lambda _p: seen.append(sum(q.grad is not None for q in params)))
        _loss(model, 0).backward()
        if hook is None:
            assert max(seen) == len(params) - 1 or max(seen) == len(params)  # all of them pile up
        else:
            assert max(seen) == expect_max


def test_checkpoint_resumes_with_and_without_in_backward():
    """3 fused steps == 3 ordinary steps through a state_dict round trip in both directions."""
    ref = _model("lsh", True)
    _train(ref, fused=False)
    for first, second in ((True, False), (False, True)):
        model = _model("lsh", True)
        opt, sched = _train(model, fused=first, steps=range(2))
        saved_model, saved_opt, saved_sched = copy.deepcopy(model.state_dict()), opt.state_dict(), sched.state_dict()
        resumed = _model("lsh", True)
        resumed.load_state_dict(saved_model)
        opt2, sched2 = _adamw(resumed)
        opt2.load_state_dict(saved_opt)  # replaces opt2.state: the hooks must follow it
        sched2.load_state_dict(saved_sched)
        _train(resumed, fused=second, steps=range(2, 3), opt=opt2, sched=sched2)
        for a, b in zip(ref.parameters(), resumed.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def _fit(cfg, max_steps):
    pl.seed_everything(0, workers=True)
    datamodule, module = validate_config(cfg)
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, gradient_clip_val=cfg.trainer.gradient_clip_val)
    trainer.fit(module, datamodule=datamodule)
    return trainer, module


def test_lightning_training_matches_ordinary_adamw(compose_cfg):
    """Through Lightning (automatic optimization, warm-up schedule): the same weights after 4 steps, the step
    counter advances, and the schedule's learning rate reaches the fused steps."""
    common = ["attention=lsh", "model.reversible=true", "trainer.gradient_clip_val=null", "model.dropout=0.0"]
    t_ref, ref = _fit(compose_cfg(*common), 4)
    t_fused, fused = _fit(compose_cfg(*common, "optimizer.in_backward=true"), 4)
    assert t_ref.global_step == t_fused.global_step == 4
    assert fused.in_backward is not None and fused.in_backward.n_steps == 4 * sum(1 for _ in fused.parameters())
    assert t_fused.optimizers[0].param_groups[0]["lr"] == pytest.approx(t_ref.optimizers[0].param_groups[0]["lr"])
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("overrides,message", [
    ([], r"no global gradient norm to clip by: set trainer.gradient_clip_val=null \(it is 1.0\)"),
    (["trainer.gradient_clip_val=null", "trainer.accumulate_grad_batches=2"], r"set trainer.accumulate_grad_batches=1"),
    (["trainer.gradient_clip_val=null", "trainer.precision=16-mixed"], r"use trainer.precision=bf16-mixed or 32-true"),
    (["trainer=ddp_cpu", "trainer.gradient_clip_val=null"], r"under DDP each rank would step on its own gradient"),
    (["trainer.gradient_clip_val=null", "trainer.devices=4"], r"under DDP"),
])
def test_invalid_combinations_fail_at_composition(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_cfg("optimizer.in_backward=true", *overrides))


def test_valid_combination_and_unknown_optimizer_key(compose_cfg):
    _, module = validate_config(compose_cfg("optimizer.in_backward=true", "trainer.gradient_clip_val=null",
                                            "trainer.precision=bf16-mixed"))
    assert module.optimizer_cfg["in_backward"] is True
    with pytest.raises(ConfigError, match=r"optimizer.momentum is not a setting of optimizer: the optimizer keys are \['betas', "):
        validate_config(compose_cfg("+optimizer.momentum=0.9"))


def test_several_processes_fail_before_the_first_step(compose_cfg):
    """A process count the config does not show (torchrun, SLURM, devices=auto) is caught when the optimizer is
    built, before any step."""
    from types import SimpleNamespace

    _, module = validate_config(compose_cfg("optimizer.in_backward=true", "trainer.gradient_clip_val=null"))
    module._trainer = SimpleNamespace(world_size=2, estimated_stepping_batches=10)
    with pytest.raises(ValueError, match="runs in one process, but this trainer has 2"):
        module.configure_optimizers()
    module._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10)
    assert module.configure_optimizers()["optimizer"] is module.in_backward.optimizer


def test_fused_adamw_is_the_default_and_makes_the_per_tensor_loops_update(compose_cfg):
    """optimizer.fused=null (default) builds torch's fused AdamW on CPU; its steps equal those of torch's per-tensor
    loop (optimizer.fused=false, the reference implementation) on the same gradients; a bad value fails at
    composition."""
    from types import SimpleNamespace

    def build(*overrides):
        _, module = validate_config(compose_cfg("+scheduler.warmup_steps=0", *overrides))
        module._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10)
        return module, module.configure_optimizers()["optimizer"]

    fused_module, fused = build()
    loop_module, loop = build("optimizer.fused=false")
    assert fused.defaults["fused"] is True and not loop.defaults["fused"] and not loop.defaults["foreach"]
    loop_module.load_state_dict(fused_module.state_dict())
    start = [p.detach().clone() for p in fused_module.parameters()]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(fused_module.parameters(), loop_module.parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for (name, a), b, a0 in zip(fused_module.named_parameters(), loop_module.parameters(), start):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(a, a0), name  # every parameter moved: the comparison is not of untouched weights
    with pytest.raises(ConfigError, match=r"optimizer.fused='yes' must be true, false or null"):
        validate_config(compose_cfg("optimizer.fused=yes"))


def test_fused_adamw_steps_aside_for_clipping_under_mixed_precision(compose_cfg):
    """Lightning's AMP plugin cannot clip gradients that a fused step unscales itself: the default then builds the
    per-tensor loop (and a run with bf16-mixed + clipping trains: tests/test_train.py), and optimizer.fused=true
    with that combination fails at composition."""
    from types import SimpleNamespace

    _, module = validate_config(compose_cfg("trainer.precision=bf16-mixed"))
    for clip, fused in ((1.0, False), (None, True)):
        module._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10, precision="bf16-mixed",
                                          gradient_clip_val=clip)
        assert bool(module.configure_optimizers()["optimizer"].defaults["fused"]) is fused
    with pytest.raises(ConfigError, match=r"optimizer.fused=true: .*bf16-mixed gradients .*gradient_clip_val=1.0"):
        validate_config(compose_cfg("optimizer.fused=true", "trainer.precision=bf16-mixed"))
    validate_config(compose_cfg("optimizer.fused=true", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=null"))
