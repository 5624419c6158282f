"""One batch size's step on a rank's GPU (CudaStep), and the torch.cuda calls it makes behind a seam (CudaRuntime).
The step's stages, CUDA graphs and IO overlap: docs/backends.md. Tests run the step on a CPU double of CudaRuntime."""
import contextlib

import torch

GRAPH_WARMUP_CALLS = 3  # forward passes on a side stream before capture, as the CUDA graphs docs ask


class CudaRuntime:
    """The torch.cuda calls CudaStep makes, in one place, so tests can run the step's logic on a CPU double."""

    def __init__(self):
        # whether events recorded inside a captured graph can time micro-batches (torch with external events, not ROCm)
        self.graph_events = False
        if not getattr(torch.version, "hip", None):
            with contextlib.suppress(TypeError):
                torch.cuda.Event(enable_timing=True, external=True)
                self.graph_events = True

    def stream(self, device):
        return torch.cuda.Stream(device)

    def use_stream(self, stream):
        return torch.cuda.stream(stream)

    def use_device(self, device):
        return torch.cuda.device(device)

    def event(self, timing=False, inside_graph=False):
        """An event; a timing event recorded inside a CUDA graph must be 'external' to become a record node."""
        if inside_graph:
            return torch.cuda.Event(enable_timing=True, external=True)
        return torch.cuda.Event(enable_timing=timing)

    def capture(self, forward, pool, stream):
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of the rank (the --timeout guard, MPI progress) may use CUDA meanwhile
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            output = forward()
        return graph, output

    def pinned_empty(self, shape, dtype):
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def pin(self, tensor):
        return tensor.pin_memory()

    def is_device_tensor(self, tensor):
        return tensor.is_cuda

    def is_pinned(self, tensor):
        return tensor.is_pinned()


class CudaStep:
    """One batch size's step on this rank's GPU: step(host or device tensor) -> (outputs in pinned host memory, valid
    until the next call; seconds of each micro-batch). With `overlap` a host input's outputs come one call later
    (output_lag_steps = 1); a device tensor (how --check-outputs hands its input over) is computed at once."""

    def __init__(self, forward_module, batch_size, example_input, device, memory_format=torch.contiguous_format,
                 overlap=True, use_graphs=False, graph_pool=None, runtime=None):
        self.runtime = runtime or CudaRuntime()
        self.forward_module = forward_module
        self.memory_format = memory_format
        self.device = device
        self.batch_size = batch_size
        self.micro_batches = max(1, example_input.shape[0] // batch_size)
        self.host_input = not self.runtime.is_device_tensor(example_input)
        self.overlap = overlap and self.host_input
        self.output_lag_steps = 1 if self.overlap else 0
        self.use_graphs = use_graphs
        self.graph_pool = graph_pool
        buffers = 2 if self.overlap else 1
        self.compute_stream = self.runtime.stream(device)
        self.copy_stream = self.runtime.stream(device) if self.overlap else self.compute_stream
        # The buffers take the example input's layout (NHWC with --channels-last, as data.py makes it): a copy
        # between layouts would transpose the whole batch on the host inside every step.
        self.device_inputs = ([torch.empty_like(example_input, device=device) for _ in range(buffers)]
                              if self.host_input else [example_input])  # device data is computed where it is
        self.pinned_inputs = ([self.runtime.pin(torch.empty_like(example_input)) for _ in range(buffers)]
                              if self.host_input else [])
        self.copied = [self.runtime.event() for _ in range(buffers)]
        self.timed_inside_graph = use_graphs and self.runtime.graph_events
        self.latency_source = ("cuda events around the graph replay, split evenly over its micro-batches"
                               if use_graphs and not self.timed_inside_graph else "cuda events around each micro-batch")
        self.events = [self._event_pairs(self.timed_inside_graph) for _ in range(buffers)]
        self.replay_events = (self.runtime.event(timing=True), self.runtime.event(timing=True))
        self.graphs = [None] * buffers
        self.graph_outputs = [None] * buffers
        self.captures = 0
        self.host_output = None
        self.pending = None  # overlap: the buffer holding an input whose forward has not run yet
        self.reuses_outputs = True  # host_output is overwritten by the next call

    def _event_pairs(self, inside_graph):
        return [(self.runtime.event(timing=True, inside_graph=inside_graph),
                 self.runtime.event(timing=True, inside_graph=inside_graph)) for _ in range(self.micro_batches)]

    def _forward(self, device_input, events):
        """Every micro-batch of one step, each between its two events; one output tensor for the step."""
        outputs = []
        for micro_batch, (start, end) in zip(device_input.split(self.batch_size), events):
            start.record()
            outputs.append(self.forward_module(micro_batch.contiguous(memory_format=self.memory_format)))
            end.record()
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _capture(self, index):
        """Warm up on a side stream (compile, cuDNN autotune), then capture the whole step for buffer `index`."""
        device_input = self.device_inputs[index]
        side = self.runtime.stream(self.device)
        side.wait_stream(self.compute_stream)
        scratch = self._event_pairs(False)
        with self.runtime.use_stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                self._forward(device_input, scratch)
        self.compute_stream.wait_stream(side)
        self.compute_stream.synchronize()
        events = self.events[index] if self.timed_inside_graph else self._event_pairs(False)
        self.graphs[index], self.graph_outputs[index] = self.runtime.capture(
            lambda: self._forward(device_input, events), self.graph_pool, self.compute_stream)
        self.captures += 1

    def _compute(self, index):
        if not self.use_graphs:
            return self._forward(self.device_inputs[index], self.events[index])
        if self.graphs[index] is None:
            self._capture(index)
        start, end = self.replay_events
        start.record()
        self.graphs[index].replay()
        end.record()
        return self.graph_outputs[index]

    def _stage(self, step_input, index):
        if self.runtime.is_pinned(step_input):
            return step_input
        return self.pinned_inputs[index].copy_(step_input)

    def _load(self, step_input):
        """Hand this step's input to the device; return (buffer whose forward runs now, buffer pending after it)."""
        if self.runtime.is_device_tensor(step_input):
            if not self.host_input and (not self.use_graphs or self.graphs[0] is None):
                self.device_inputs[0] = step_input  # synthetic data: eager uses it as it is, graphs capture on it
            elif step_input.data_ptr() != self.device_inputs[0].data_ptr():
                # another device tensor (the output check after the timed steps): copied into buffer 0 and computed
                # now, so its outputs are its own; a host-input pipeline starts again with the next host input
                self.device_inputs[0].copy_(step_input, non_blocking=True)
            return 0, None
        if not self.overlap:
            self.device_inputs[0].copy_(self._stage(step_input, 0), non_blocking=True)
            return 0, None
        if self.pending is None:
            # prime the pipeline: this input goes into both buffers (so both can be captured) and is computed
            # now; it stays pending, so the next step computes it again while copying its own input
            for buffer in range(len(self.device_inputs)):
                self.device_inputs[buffer].copy_(self._stage(step_input, buffer), non_blocking=True)
            if self.use_graphs and self.graphs[1] is None:
                self._capture(1)
            return 0, 0
        index = self.pending
        incoming = 1 - index
        staged = self._stage(step_input, incoming)
        with self.runtime.use_stream(self.copy_stream):
            self.device_inputs[incoming].copy_(staged, non_blocking=True)
            self.copied[incoming].record()
        self.compute_stream.wait_event(self.copied[index])
        return index, incoming

    def __call__(self, step_input):
        with torch.inference_mode(), self.runtime.use_device(self.device), self.runtime.use_stream(self.compute_stream):
            index, self.pending = self._load(step_input)
            device_output = self._compute(index)
            if self.host_output is None:
                self.host_output = self.runtime.pinned_empty(tuple(device_output.shape), device_output.dtype)
            self.host_output.copy_(device_output, non_blocking=True)
            self.compute_stream.synchronize()
            if self.copy_stream is not self.compute_stream:
                self.copy_stream.synchronize()
        return self.host_output, self._latencies(index)

    def _latencies(self, index):
        if self.use_graphs and not self.timed_inside_graph:
            start, end = self.replay_events
            each = start.elapsed_time(end) * 1e-3 / self.micro_batches
            return [each] * self.micro_batches
        return [start.elapsed_time(end) * 1e-3 for start, end in self.events[index]]
