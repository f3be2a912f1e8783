# Per study, under results/reports/<config>/<study>/: runs.csv (every metrics file as one table), each table
# (csv, md, tex) and figure (png, pdf) the study names, and its scorecard (the papers' claims checked); per config,
# SCORECARD.md over all studies and compare.md against the committed reference reports. One target rule per
# study, named after it (snakemake <study>). The committed reports/ are never written by the workflow.


rule runs:
    input:
        study_metrics,
    output:
        rep("runs.csv"),
    log:
        os.path.join(RESULTS, "{study}", "runs.log"),
    params:
        config=config_args,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench runs {params.config} --study {wildcards.study} > {log} 2>&1"


rule table:
    input:
        rep("runs.csv"),
    output:
        csv=report(rep("{name}.csv"), caption="../report/output.rst", category="{study}",
                   labels={"study": "{study}", "table": "{name}"}),
        md=rep("{name}.md"),
        tex=rep("{name}.tex"),
    log:
        os.path.join(RESULTS, "{study}", "{name}.table.log"),
    wildcard_constraints:
        name=TABLE_NAMES,
    params:
        config=config_args,
        caption=caption("table"),
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench table {params.config} --study {wildcards.study} --name {wildcards.name} > {log} 2>&1"


rule figure:
    input:
        rep("runs.csv"),
    output:
        png=report(rep("{name}.png"), caption="../report/output.rst", category="{study}",
                   labels={"study": "{study}", "figure": "{name}"}),
        pdf=rep("{name}.pdf"),
    log:
        os.path.join(RESULTS, "{study}", "{name}.figure.log"),
    wildcard_constraints:
        name=FIGURE_NAMES,
    params:
        config=config_args,
        caption=caption("figure"),
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench figure {params.config} --study {wildcards.study} --name {wildcards.name} > {log} 2>&1"


rule scorecard:
    input:
        rep("runs.csv"),
    output:
        csv=report(rep("scorecard.csv"), caption="../report/scorecard.rst", category="{study}",
                   labels={"study": "{study}", "table": "scorecard"}),
        md=rep("scorecard.md"),
    log:
        os.path.join(RESULTS, "{study}", "scorecard.log"),
    params:
        config=config_args,
        claims=lambda wc: json.dumps(CFG["studies"][wc.study]["claims"], sort_keys=True),  # an edited claim rescores
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench scorecard {params.config} --study {wildcards.study} > {log} 2>&1"


rule scorecards:
    input:
        [os.path.join(REPORTS, study, "runs.csv") for study in CFG["studies"]],
    output:
        csv=report(os.path.join(REPORTS, "SCORECARD.csv"), caption="../report/scorecard.rst", category="scorecard",
                   labels={"study": "all", "table": "SCORECARD"}),
        md=os.path.join(REPORTS, "SCORECARD.md"),
    log:
        os.path.join(RESULTS, "scorecard.log"),
    params:
        config=config_args,
        claims=json.dumps({study: spec["claims"] for study, spec in CFG["studies"].items()}, sort_keys=True),
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench scorecard {params.config} > {log} 2>&1"


rule compare:
    input:
        run=[os.path.join(REPORTS, study, "runs.csv") for study in CFG["studies"]],
        reference=reference_runs,
    output:
        csv=report(os.path.join(REPORTS, "compare.csv"), caption="../report/compare.rst", category="scorecard",
                   labels={"study": "all", "table": "compare"}),
        md=os.path.join(REPORTS, "compare.md"),
    log:
        os.path.join(RESULTS, "compare.log"),
    params:
        config=config_args,
        reference=REFERENCE,
        tolerance=json.dumps(CFG["compare"], sort_keys=True),  # a changed tolerance compares again
        reports=lambda wildcards, output: os.path.dirname(output.md),
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench compare {params.config} {params.reports} {params.reference} > {log} 2>&1 || (cat {log}; exit 1)"


for _study in CFG["studies"]:

    rule:
        name:
            _study
        input:
            study_outputs(_study),
