"""The pipeline's DAG as text (each stage after what it needs) or DOT."""


def text(pipeline):
    out = []
    for name in pipeline.order():
        st = pipeline.stages[name]
        out.append(f"{name}" + (f"  <- {', '.join(st.needs)}" if st.needs else ""))
    return "\n".join(out) + "\n"


def dot(pipeline):
    out = ["digraph pipeline {", "  rankdir=LR;"]
    for name in pipeline.order():
        out.append(f'  "{name}";')
        for n in pipeline.stages[name].needs:
            out.append(f'  "{n}" -> "{name}";')
    out.append("}")
    return "\n".join(out) + "\n"
