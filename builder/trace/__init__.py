"""Execution traces: what a pipeline program actually computed during one ``generate()`` call.

The package: :mod:`.record` (the :class:`Tracer` and its hooks), :mod:`.entries` (the trace's format, versioned,
and :class:`Trace`, which writes it), :mod:`.compare` (:func:`compare_traces`) and :mod:`.normalise` (deterministic
JSON values).

``Tracer(pipe)`` is created once, after the program's ``load()`` (so nothing of it exists while the program is
imported or loaded). Each ``with tracer.recording() as trace: images = module.generate(...)`` installs its hooks,
records that one call and removes them again, so untraced calls run untouched. ``trace.to_dict()`` is a compact,
deterministic, JSON-able dict; ``trace.digest`` a hash of it. :func:`compare_traces` says, in one line, where two
traces first differ.

What is recorded
----------------
- **Denoiser calls** (``pipe.unet`` or ``pipe.transformer``; a ``torch.compile`` wrapper is looked through), from a
  forward pre-hook, so they count whoever replaced ``forward`` (DeepCache, T-GATE): the timestep, the latent
  input's shape (batch *including* the classifier-free-guidance doubling, channels, height, width) and dtype, the
  encoder hidden states' shape and the shapes of SDXL's ``added_cond_kwargs``.
- **Which parts of the denoiser ran** in each call: a *unit* is a top-level child of the denoiser (``conv_in``,
  ``time_embedding``, ``mid_block``, ``transformer_blocks.3``...), split one level further where it holds
  ModuleLists (``down_blocks.1.attentions.0``, ``up_blocks.3.resnets.2``); units without parameters (activations)
  are left out. A unit *ran* if any module with parameters inside it was called. DeepCache replaces skipped
  blocks' ``forward`` with a cache lookup, so their layers are never called: the pattern shows its interval and
  branch.
- **Every attention call** inside the denoiser (each ``diffusers`` ``Attention`` module): the query length (ToMe
  merges tokens before self-attention), the key/value length for cross-attention, and whether it was *computed*
  (one of its projection layers ran) or *reused* (T-GATE replaces ``Attention.forward`` per instance and returns its
  cache without touching a projection; its self-attention reuse shows the same way).
- **Every scheduler step** (``step`` wrapped on every ``SchedulerMixin`` subclass, at class level, with
  ``functools.wraps`` because pipelines inspect its signature): the class by identity (module and qualified name,
  and whether it *is* diffusers' class), its full config at that moment, the timestep, the sample's shape and
  the step's other arguments with defaults applied (``eta``, ``s_churn``...). A subclass's ``step`` that calls
  ``super().step`` is recorded once, as the subclass.
- ``set_timesteps`` calls (class, ``num_inference_steps`` and other arguments, the schedule length).
- **VAE decodes** (a pre-hook on ``pipe.vae.decoder``): how many latents of which shape were decoded.
- Calls of the denoiser's layers *outside* a denoiser call (a hand-made loop over its blocks).

What is ignored (choices that do not change the computation)
------------------------------------------------------------
- which attention processor or backend runs (``AttnProcessor``, ``AttnProcessor2_0``, fused QKV projections via
  ``fuse_qkv_projections()``, SDPA kernels): only whether a projection ran counts, not which one or how often;
- memory formats (channels-last), devices, module classes and wrappers, and the number of layer calls inside a
  unit;
- how VAE decoding is batched (sliced decoding decodes the same latents one at a time): only the number and
  shape of the decoded latents count;
- the text encoders, the order of calls to other modules, tensor values (the gate compares images for that);
- timesteps and config values are rounded to 6 significant digits.
"""


from accelbench.builder.trace.compare import compare_traces
from accelbench.builder.trace.entries import TRACE_VERSION, AttentionEntry, Trace, trace_digest
from accelbench.builder.trace.record import Tracer

__all__ = ["TRACE_VERSION", "AttentionEntry", "Trace", "Tracer", "compare_traces", "trace_digest"]
