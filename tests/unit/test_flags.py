import pytest

from llamarig.release.flags import flag_names, server_args
from llamarig.hostdata.validate import validate_host

from .helpers import rig


def service(**kw):
    doc, problems = validate_host("r", rig(services=[{"name": "s", "model": "gemma", "port": 8000, **kw}]))
    assert problems == []
    return doc["services"][0]


def test_unset_keys_render_no_flag():
    assert server_args(service(), "/m.gguf") == ["--model", "/m.gguf", "--port", "8000"]


def test_glm_six_card_seed_flags():
    args = server_args(service(host="0.0.0.0", tensor_split=[1, 1], ctx_size=131072, cache_type_k="q8_0",
                               cache_type_v="q8_0", sampling={"temp": 0.6, "top_p": 0.95}), "/m.gguf")
    assert args == ["--model", "/m.gguf", "--host", "0.0.0.0", "--port", "8000", "--ctx-size", "131072",
                    "--tensor-split", "1,1", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0",
                    "--temp", "0.6", "--top-p", "0.95"]


def test_overrides_keep_their_order_and_catch_all_last():
    args = server_args(service(tensor_overrides=[["blk\\.(3|4)\\.ffn_(gate|up|down)_exps\\.", "CUDA0"],
                                                 ["blk\\.(5|6)\\.ffn_(gate|up|down)_exps\\.", "CUDA1"],
                                                 ["ffn_(gate|up|down)_exps\\.", "CPU"]]), "/m")
    ots = [args[i + 1] for i, a in enumerate(args) if a == "--override-tensor"]
    assert ots == ["blk\\.(3|4)\\.ffn_(gate|up|down)_exps\\.=CUDA0", "blk\\.(5|6)\\.ffn_(gate|up|down)_exps\\.=CUDA1",
                   "ffn_(gate|up|down)_exps\\.=CPU"]


@pytest.mark.parametrize("key,value,flags", [
    ("mmap", False, ["--no-mmap"]), ("mmap", True, ["--mmap"]),
    ("jinja", True, ["--jinja"]), ("jinja", False, ["--no-jinja"]),
    ("fit", False, ["--fit", "off"]), ("flash_attn", "on", ["--flash-attn", "on"]),
    ("n_gpu_layers", 999, ["--n-gpu-layers", "999"]), ("threads", 12, ["--threads", "12"]),
    ("batch_size", 2048, ["--batch-size", "2048"]), ("ubatch_size", 512, ["--ubatch-size", "512"]),
    ("split_mode", "layer", ["--split-mode", "layer"]), ("parallel", 1, ["--parallel", "1"]),
])
def test_each_typed_key_maps_to_its_flag(key, value, flags):
    args = server_args(service(**{key: value}), "/m")
    assert args[4:] == flags


def test_extra_args_come_last_verbatim():
    args = server_args(service(jinja=True, extra_args=["--reasoning", "off"]), "/m")
    assert args[-3:] == ["--jinja", "--reasoning", "off"]


def ik_service(**kw):
    doc, problems = validate_host("r", rig(build_fork="ik_llama.cpp",
                                            services=[{"name": "s", "model": "gemma", "port": 8000, **kw}]))
    assert problems == []
    return doc["services"][0]


@pytest.mark.parametrize("key,value,mainline,ik", [
    ("jinja", False, ["--no-jinja"], []),          # ik has no --no-jinja: off is its default
    ("mmap", False, ["--no-mmap"], ["--no-mmap"]),
    ("fit", True, ["--fit", "on"], ["--fit"]),      # ik's --fit is a bare flag
    ("fit", False, ["--fit", "off"], []),
    ("cpu_moe", True, ["--cpu-moe"], ["--cpu-moe"]),
])
def test_bool_flags_per_fork(key, value, mainline, ik):
    assert server_args(service(**{key: value}), "/m", "llama.cpp")[4:] == mainline
    assert server_args(ik_service(**{key: value}), "/m", "ik_llama.cpp")[4:] == ik


def test_ik_only_flags():
    args = server_args(ik_service(split_mode="graph", grouped_expert_routing=True, merge_qkv=True,
                                  split_mode_graph_scheduling=True, max_extra_alloc=256, n_cpu_moe=72,
                                  fused_moe=False, cache_type_k="Q8_kv"), "/m", "ik_llama.cpp")
    assert args[4:] == ["--split-mode", "graph", "--n-cpu-moe", "72", "--cache-type-k", "q8_KV",
                        "--max-extra-alloc", "256", "--grouped-expert-routing", "--merge-qkv",
                        "--split-mode-graph-scheduling", "--no-fused-moe"]


def test_flag_names_skip_values_and_negative_numbers():
    assert flag_names(["--model", "/m", "--n-gpu-layers", "-1", "--fit=off"]) == ["--model", "--n-gpu-layers", "--fit"]


def test_the_planned_placement_renders_in_place_of_the_declared_keys_and_summarises():
    from llamarig.planner.placement import Flags
    from llamarig.release.flags import placement_words

    service = {"port": 8080, "ctx_size": 4096, "n_gpu_layers": 5, "tensor_split": [1, 1], "tensor_overrides": [],
               "n_cpu_moe": 3, "extra_args": ["--threads", "4"]}
    planned = Flags(2, 94, [3, 1], [("blk\\.1\\.ffn_.*_exps", "CUDA1"), ("exps", "CPU")])
    args = server_args(service, "m.gguf", "llama.cpp", planned)
    assert args == ["--model", "m.gguf", "--port", "8080", "--ctx-size", "4096", "--n-gpu-layers", "94",
                    "--tensor-split", "3,1", "--override-tensor", "blk\\.1\\.ffn_.*_exps=CUDA1",
                    "--override-tensor", "exps=CPU", "--fit", "off", "--threads", "4"]
    assert service["n_gpu_layers"] == 5  # the declared service is left as declared
    assert placement_words(args) == ["--n-gpu-layers", "94", "--tensor-split", "3,1", "--override-tensor",
                                     "blk\\.1\\.ffn_.*_exps=CUDA1", "--override-tensor", "exps=CPU", "--fit", "off"]
    one = server_args(service, "m.gguf", "ik_llama.cpp", Flags(1, 10, [1], []))
    assert "--tensor-split" not in one and "--fit" not in one and "--n-cpu-moe" not in one
