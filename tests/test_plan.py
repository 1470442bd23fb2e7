"""The stage graph, platforms and the image-config state (builder.plan.graph/platform/state)."""

from __future__ import annotations

import pytest

from builder.errors import DockerfileError, StoreError, UsageError
from builder.plan.graph import StageRef, build_graph, trigger_dependencies
from builder.plan.platform import Platform, host_platform
from builder.plan.state import DEFAULT_PATH, HealthConfig, ImageConfigState
from builder.source import Span
from builder.syntax.ast import Node
from builder.syntax.instructions import Arg, Copy, From
from test_plan_support import AMD64, ARM64, graph_of


# ---- platform ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/arm/v6", "linux/arm/v6"),
    ("Linux/AMD64", "linux/amd64"),
])
def test_platform_parse_normalises(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("bad", ["", "linux/", "a/b/c/d", "/amd64"])
def test_platform_parse_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        Platform.parse(bad)


def test_host_platform_is_normalised() -> None:
    host = host_platform()
    assert host.os == "linux"
    assert host.architecture in {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"}
    assert Platform.parse(str(host)) == host


def test_platform_args() -> None:
    p = Platform("linux", "arm", "v7")
    assert p.args("TARGET") == {"TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm",
                                "TARGETVARIANT": "v7"}


# ---- meta ARGs and FROM -------------------------------------------------------------------------

def test_meta_args_expand_from() -> None:
    g = graph_of("ARG REPO=library\nARG IMG=${REPO}/alpine\nARG TAG\nFROM ${IMG}:${TAG:-3.19}\n")
    assert g.meta_args == (("REPO", "library"), ("IMG", "library/alpine"), ("TAG", None))
    assert g.stages[0].base == "library/alpine:3.19"
    assert set(g.stages[0].used_meta_args) == {"IMG"}


def test_undeclared_build_arg_not_visible_to_from() -> None:
    g = graph_of("FROM img:${T:-x}\n", build_args={"T": "y"})
    assert g.stages[0].base == "img:x"
    assert g.unused_build_args == ("T",)


def test_build_arg_overrides_meta_arg() -> None:
    g = graph_of("ARG TAG=1\nARG FULL=x:$TAG\nFROM $FULL\n", build_args={"TAG": "2"})
    assert g.meta_args == (("TAG", "2"), ("FULL", "x:2"))
    assert g.stages[0].base == "x:2"
    assert ("TAG", "2") in g.global_args


def test_predefined_platform_args_in_global_scope() -> None:
    g = graph_of("FROM --platform=$BUILDPLATFORM golang AS b\nFROM img-$TARGETARCH\n",
                 platform=ARM64, build_platform=AMD64)
    assert g.stages[0].platform == AMD64
    assert g.stages[1].platform == ARM64
    assert g.stages[1].base == "img-arm64"
    scope = g.global_dict()
    assert scope["TARGETPLATFORM"] == "linux/arm64" and scope["BUILDARCH"] == "amd64"
    assert scope["TARGETVARIANT"] == ""


def test_from_blank_base_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="should not be blank") as err:
        graph_of("ARG B\nFROM $B\n")
    assert err.value.span is not None and err.value.span.line == 2


def test_from_bad_platform() -> None:
    with pytest.raises(DockerfileError, match="failed to parse platform") as err:
        graph_of("FROM --platform=linux/ alpine\n")
    assert err.value.span is not None and err.value.span.line == 1


def test_scratch_and_stage_bases() -> None:
    g = graph_of("FROM scratch AS Base\nFROM BASE AS two\nFROM alpine\n")
    assert g.stages[0].base == "scratch"
    assert g.stages[0].name == "base"
    assert g.stages[1].base == StageRef(0)
    assert g.stages[1].deps == (0,)
    assert g.stages[2].base == "alpine"


def test_stage_platform_inherited_from_base_stage() -> None:
    g = graph_of("FROM --platform=linux/arm64 alpine AS a\nFROM a\n")
    assert g.stages[1].platform == ARM64


def test_duplicate_stage_name_warns_and_the_later_stage_wins() -> None:
    """BuildKit: lint warning DuplicateStageName; FROM name is the latest earlier definition,
    --from / --target resolve once every stage is known (the last definition)."""
    g = graph_of("FROM alpine AS a\nFROM a AS mid\nFROM busybox AS A\nFROM a AS after\n"
                 "COPY --from=a /x /x\n")
    assert [(span.line if span else None, text) for span, text in g.warnings] == [
        (3, 'DuplicateStageName: Duplicate stage name "a", stage names should be unique')]
    assert g.stages[1].base == StageRef(0)        # FROM a before the second "a"
    assert g.stages[3].base == StageRef(2)        # FROM a after it
    assert g.stages[3].deps == (2,)
    assert graph_of("FROM alpine AS a\nFROM busybox AS a\nFROM scratch\n", target="a").target == 1
    with pytest.raises(DockerfileError, match='cannot copy from stage "a", it needs to be defined before') as err:
        graph_of("FROM alpine AS a\nFROM scratch AS mid\nCOPY --from=a /x /x\nFROM busybox AS a\n",
                 target="mid")
    assert err.value.span is not None and err.value.span.line == 3


def test_instruction_before_from() -> None:
    node = Node("COPY", ("a", "b"), Span(1))
    with pytest.raises(DockerfileError, match="no build stage"):
        build_graph([Copy(node, "COPY", ("a",), "b")], build_args={}, target=None, platform=AMD64,
                    build_platform=AMD64)


def test_typed_instructions_directly() -> None:
    """The graph works from typed instructions built by hand (no parser involved)."""
    instrs = [
        Arg(Node("ARG", ("V=1",), Span(1)), "V", "1"),
        From(Node("FROM", ("img:$V",), Span(2)), "img:$V", "first"),
        From(Node("FROM", ("first",), Span(3)), "first", None),
    ]
    g = build_graph(instrs, build_args={}, target=None, platform=AMD64, build_platform=AMD64)
    assert g.stages[0].base == "img:1"
    assert g.stages[1].base == StageRef(0)
    assert g.build_order == (0, 1)


# ---- target and pruning -------------------------------------------------------------------------

MULTI = """\
FROM alpine AS base
FROM base AS deps
FROM golang AS tools
FROM deps AS build
COPY --from=tools /go/bin/x /x
RUN --mount=type=bind,from=base,target=/b true
FROM scratch AS unused
FROM build AS final
"""


def test_default_target_is_last_stage() -> None:
    g = graph_of(MULTI)
    assert g.target == 5
    assert g.build_order == (0, 1, 2, 3, 5)


def test_target_case_insensitive_and_pruning() -> None:
    g = graph_of(MULTI, target="DEPS")
    assert g.target == 1
    assert g.build_order == (0, 1)
    g = graph_of(MULTI, target="build")
    assert g.build_order == (0, 1, 2, 3)
    assert g.stages[3].deps == (1, 2, 0)


def test_target_not_found() -> None:
    with pytest.raises(DockerfileError, match='target stage "nope" could not be found') as err:
        graph_of(MULTI, target="nope")
    assert err.value.span is None


def test_copy_from_index_and_image() -> None:
    g = graph_of("FROM alpine\nFROM busybox\nCOPY --from=0 /a /a\nCOPY --from=nginx:1 /b /b\n")
    assert g.stages[1].deps == (0,)
    assert g.stages[1].image_refs == ("nginx:1",)
    assert g.build_order == (0, 1)


def test_copy_from_later_index_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="needs to be defined before") as err:
        graph_of("FROM alpine AS a\nCOPY --from=1 /a /a\nFROM busybox\nFROM a\n")
    assert err.value.span is not None and err.value.span.line == 2


def test_later_stage_reference_in_unneeded_stage_is_ignored() -> None:
    """As in BuildKit, only the stages the target needs are checked for order."""
    g = graph_of("FROM alpine\nCOPY --from=1 /a /a\nFROM busybox AS b\n", target="b")
    assert g.build_order == (1,)


def test_copy_from_index_out_of_range() -> None:
    with pytest.raises(DockerfileError, match="invalid stage index 5"):
        graph_of("FROM alpine\nCOPY --from=5 /a /a\n")


def test_copy_from_itself_is_a_cycle() -> None:
    with pytest.raises(DockerfileError, match="circular dependency detected on stage: a") as err:
        graph_of("FROM alpine AS a\nCOPY --from=a /x /y\n")
    assert err.value.span is not None and err.value.span.line == 2


def test_copy_from_cycle_between_stages() -> None:
    text = "FROM alpine AS a\nCOPY --from=b /x /y\nFROM alpine AS b\nCOPY --from=a /x /y\n"
    with pytest.raises(DockerfileError, match="circular dependency") as err:
        graph_of(text)
    assert err.value.span is not None and err.value.span.line == 4


def test_copy_from_variable_rejected() -> None:
    with pytest.raises(DockerfileError, match="variable expansion is not supported for --from"):
        graph_of("ARG S=a\nFROM alpine AS a\nFROM alpine\nCOPY --from=$S /x /y\n")


def test_mount_from_variable_rejected() -> None:
    with pytest.raises(DockerfileError, match="doesn't support variable expansion"):
        from builder.plan.mounts import parse_mount

        parse_mount("type=bind,from=$X,target=/x", expand=lambda w: w, workdir="/", span=Span(3))


def test_unused_build_args() -> None:
    g = graph_of("ARG A\nFROM alpine\nARG B\nRUN true\n",
                 build_args={"A": "1", "B": "2", "C": "3", "http_proxy": "x", "SOURCE_DATE_EPOCH": "0"})
    assert g.unused_build_args == ("C",)


def test_unused_build_args_only_count_needed_stages() -> None:
    g = graph_of("FROM alpine AS a\nARG X\nFROM alpine AS b\n", build_args={"X": "1"}, target="b")
    assert g.unused_build_args == ("X",)


# ---- ImageConfigState ---------------------------------------------------------------------------

def test_state_scratch_defaults() -> None:
    st = ImageConfigState.from_config(None)
    assert st.env == (("PATH", DEFAULT_PATH),)
    assert st.effective_shell == ("/bin/sh", "-c")
    assert st.working_dir == "/"
    assert st.to_config() == {"Env": ["PATH=" + DEFAULT_PATH], "WorkingDir": "/"}


def test_state_adds_path_when_missing() -> None:
    st = ImageConfigState.from_config({"Env": ["A=1"]})
    assert st.env == (("A", "1"), ("PATH", DEFAULT_PATH))


def test_state_round_trip_field_order_and_omission() -> None:
    cfg = {
        "User": "app",
        "ExposedPorts": {"443/tcp": {}, "80/tcp": {}},
        "Env": ["PATH=/bin", "A=b=c"],
        "Entrypoint": ["/entry"],
        "Cmd": ["run"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/app",
        "Labels": {"z": "1", "a": "2"},
        "StopSignal": "SIGTERM",
        "ArgsEscaped": True,
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000, "Retries": 3},
        "OnBuild": ["RUN x"],
        "Shell": ["/bin/bash", "-c"],
    }
    st = ImageConfigState.from_config(cfg)
    assert st.env == (("PATH", "/bin"), ("A", "b=c"))
    assert st.exposed_ports == ("443/tcp", "80/tcp")
    out = st.to_config()
    assert out == cfg
    assert list(out) == ["User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                         "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell"]
    assert list(out["Labels"]) == ["a", "z"]


def test_state_omits_empty_fields() -> None:
    st = ImageConfigState(env=(), entrypoint=(), cmd=None, healthcheck=HealthConfig(test=("NONE",)))
    assert st.to_config() == {"Healthcheck": {"Test": ["NONE"]}}


@pytest.mark.parametrize("bad", [
    {"Env": "A=1"}, {"Labels": ["a"]}, {"Cmd": [1]}, {"WorkingDir": 5},
    {"Healthcheck": {"Test": ["CMD"], "Interval": "soon"}},
])
def test_state_rejects_bad_config(bad: dict) -> None:
    with pytest.raises(StoreError):
        ImageConfigState.from_config(bad)


def test_state_with_env_replaces_in_place() -> None:
    st = ImageConfigState.from_config({"Env": ["A=1", "B=2"]})
    st = st.with_env("A", "3").with_env("C", "4")
    assert st.env == (("A", "3"), ("B", "2"), ("PATH", DEFAULT_PATH), ("C", "4"))


def test_stage_named_like_its_base_image() -> None:
    g = graph_of("FROM foo AS foo\nFROM foo\n")
    assert g.stages[0].base == "foo"
    assert g.stages[1].base == StageRef(0)


def test_trigger_dependencies() -> None:
    from builder.syntax.parser import parse_text
    from builder.syntax.typed import to_instructions

    g = graph_of("FROM alpine AS assets\nFROM onbuild-base AS app\n", target="app")
    assert g.build_order == (1,)
    triggers = to_instructions(parse_text("COPY --from=assets /a /a"))
    assert trigger_dependencies(g, 1, triggers) == (0,)
    with pytest.raises(DockerfileError, match="circular dependency") as err:
        trigger_dependencies(g, 1, to_instructions(parse_text("COPY --from=app /a /a")))
    assert err.value.span == g.stages[1].from_instr.node.span
