"""Invalid objects, one per validation rule (plus wrong types and unknown enum values), each with the field the
error must name. The API server must reject each (tests/integration) and so must the Python models
(tests/unit), so the CRD and the trainer can never disagree about what is valid. ACCEPTED holds the boundary
values next to those rules, which both must accept."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_DELETE = object()


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


@dataclass(frozen=True)
class Case:
    id: str
    base: str  # example file the case starts from
    changes: tuple[tuple[str, Any], ...]  # dotted path -> new value (_DELETE removes it)
    field: str = ""  # the field the API server's message must name (none for ACCEPTED)
    words: str = ""  # a phrase of the message

    def build(self, prefix: str = "bad") -> dict[str, Any]:
        obj = copy.deepcopy(example(self.base))
        obj["metadata"]["name"] = f"{prefix}-{self.id}"
        for path, value in self.changes:
            *parents, last = path.split(".")
            node: Any = obj
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
            if value is _DELETE:
                del node[last]
            elif isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        return obj


DJ = "distillationjob-classification.yaml"
# The classification example turned into an embedding job (the cases then set its loss terms); its teacher
# confidence settings go, since an embedding teacher gives none.
EMBEDDING_TASK: tuple[tuple[str, Any], ...] = (
    ("spec.task", "embedding"), ("spec.data.fields.label", _DELETE), ("spec.evaluation.primaryMetric", "cosine"),
    ("spec.labeling.temperature", _DELETE), ("spec.labeling.minRelativeConfidence", _DELETE),
    ("spec.training.curriculum", _DELETE))
SM = "studentmodel.yaml"
CR = "canaryrollout.yaml"

CASES = [
    Case("two-teachers", DJ, (("spec.teacher.triton", {"url": "http://t:8000", "modelName": "t"}),),
         "spec.teacher", "exactly one teacher source"),
    Case("no-teacher", DJ, (("spec.teacher.modelUri", _DELETE),), "spec.teacher", "exactly one teacher source"),
    Case("temperature-zero", DJ, (("spec.loss.terms.0.temperature", 0),),
         "spec.loss.terms[0].temperature", "should be greater than 0"),
    Case("alpha-above-one", DJ, (("spec.loss.terms.0.alpha", 1.5),),
         "spec.loss.terms[0].alpha", "less than or equal to 1"),
    Case("alpha-on-wrong-loss", DJ, (("spec.loss.terms.1.alpha", 0.5),),
         "spec.loss.terms[1].alpha", "alpha only applies to logit-kl"),
    Case("splits-not-one", DJ, (("spec.data.splits", {"train": 0.7, "validation": 0.1, "test": 0.1}),),
         "spec.data.splits", "must sum to 1"),
    Case("lora-without-base", DJ, (("spec.student.lora", {"r": 8}),), "spec.student.lora",
         "lora needs a baseModelUri"),
    Case("base-and-architecture", DJ, (("spec.student.baseModelUri", "file:///models/s"),),
         "spec.student", "exactly one of baseModelUri and architecture"),
    Case("int8-four-bits", DJ, (("spec.student.quantization", {"method": "int8", "bits": 4}),),
         "spec.student.quantization.bits", "bits must be 8 for int8"),
    Case("gptq-five-bits", DJ, (("spec.student.quantization", {"method": "gptq", "bits": 5}),),
         "spec.student.quantization.bits", "one of 2, 3, 4, 8 for gptq"),
    Case("loss-wrong-task", DJ, (("spec.loss.terms.1", {"name": "margin-mse"}),), "spec.loss",
         "does not apply to this task"),
    Case("duplicate-loss", DJ, (("spec.loss.terms.1", {"name": "logit-kl"}),), "spec.loss.terms",
         "each loss name may appear once"),
    Case("unknown-task", DJ, (("spec.task", "segmentation"),), "spec.task", "Unsupported value"),
    Case("wrong-type-epochs", DJ, (("spec.training.epochs", "three"),), "spec.training.epochs",
         "must be of type integer"),
    Case("bad-uri-scheme", DJ, (("spec.output.artifactUri", "ftp://host/x"),), "spec.output.artifactUri",
         "should match"),
    Case("bad-s3-bucket", DJ, (("spec.data.uri", "s3://Bad_Bucket/data.jsonl"),), "spec.data.uri", "should match"),
    Case("layers-count", DJ, (("spec.student.architecture.fromTeacherLayers", [0, 3, 5]),),
         "spec.student.architecture.fromTeacherLayers", "exactly numLayers"),
    Case("static-student-generation", DJ,
         (("spec.task", "generation"), ("spec.loss.terms", [{"name": "token-kl"}]),
          ("spec.evaluation.primaryMetric", "rougeL"), ("spec.student.architecture", {"numLayers": 0})),
         "spec.student", "numLayers 0 (a static-embedding student) is for classification and embedding only"),
    Case("keep-best-without-validation", DJ,
         (("spec.data.splits", {"train": 0.9, "validation": 0, "test": 0.1}), ("spec.training.keepBest", True)),
         "spec.training", "need a validation split"),
    Case("early-stop-without-validation", DJ,
         (("spec.data.splits", {"train": 0.9, "validation": 0, "test": 0.1}),
          ("spec.training.earlyStoppingPatience", 2)),
         "spec.training", "need a validation split"),
    Case("early-stop-zero-patience", DJ, (("spec.training.earlyStoppingPatience", 0),),
         "spec.training.earlyStoppingPatience", "greater than or equal to 1"),
    Case("reranking-without-pair", DJ,
         (("spec.task", "reranking"), ("spec.loss.terms", [{"name": "margin-mse"}]),
          ("spec.evaluation.primaryMetric", "ndcg@10")),
         "spec.data", "reranking needs data.fields.pair"),
    Case("embedding-retrieval-metric-without-pair", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-cosine"}]),
          ("spec.evaluation.primaryMetric", "recall@10")),
         "spec.evaluation.primaryMetric", "set data.fields.pair"),
    Case("unknown-primary-metric", DJ, (("spec.evaluation.primaryMetric", "f1"),),
         "spec.evaluation.primaryMetric", "is not a metric the task measures (names are case-sensitive): f1; "
         "classification measures accuracy, macro_precision, macro_recall, macro_f1, agreement"),
    Case("primary-metric-of-another-task", DJ, (("spec.evaluation.primaryMetric", "ndcg@10"),),
         "spec.evaluation.primaryMetric", "(names are case-sensitive): ndcg@10; classification measures"),
    Case("primary-metric-case", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-cosine"}]),
          ("spec.evaluation.primaryMetric", "Cosine")),
         "spec.evaluation.primaryMetric", "(names are case-sensitive): Cosine; embedding measures cosine, recall@1"),
    Case("unknown-reported-metric", DJ, (("spec.evaluation.metrics", ["accuracy", "bleu", "ndcg@10"]),),
         "spec.evaluation.metrics", "metrics the task does not measure (names are case-sensitive)"),
    Case("memory-without-unit", DJ, (("spec.resources.train.memory", "24"),),
         "spec.resources.train.memory", "memory needs a byte unit"),
    Case("label-memory-without-unit", DJ, (("spec.resources.label.memory", "16"),),
         "spec.resources.label.memory", "memory needs a byte unit"),
    Case("memory-in-millibytes", SM, (("spec.serving.resources.memory", "512m"),),
         "spec.serving.resources.memory", "a bare number is bytes and m is thousandths of a byte"),
    Case("empty-metric-name", DJ, (("spec.evaluation.metrics", [""]),),
         "spec.evaluation.metrics[0]", "at least 1"),
    Case("gold-metric-without-labels", DJ,
         (("spec.data.fields.label", _DELETE), ("spec.evaluation.primaryMetric", "macro_f1")),
         "spec.evaluation.primaryMetric", "compare with gold labels: set data.fields.label"),
    Case("gold-reported-metric-without-labels", DJ,
         (("spec.data.fields.label", _DELETE), ("spec.evaluation.primaryMetric", "agreement"),
          ("spec.evaluation.metrics", ["agreement", "accuracy"])),
         "spec.evaluation.metrics", "compare with gold labels: set data.fields.label"),
    Case("embedding-reported-retrieval-metric-without-pair", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-cosine"}]),
          ("spec.evaluation.metrics", ["cosine", "mrr@10"])),
         "spec.evaluation.metrics", "rank each text's pair: set data.fields.pair"),
    Case("toleration-exists-value", DJ,
         (("spec.resources.train.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),),
         "spec.resources.train.tolerations[0].value", "operator Exists must not set value"),
    Case("unknown-field", DJ, (("spec.training.epoch", 3),), "spec.training.epoch", "unknown field"),
    Case("sm-preferred-batch", SM, (("spec.serving.dynamicBatching.preferredBatchSizes", [8, 64]),),
         "spec.serving.dynamicBatching", "must not exceed maxBatchSize"),
    Case("sm-gpu-without-gpus", SM, (("spec.serving.instanceGroup.kind", "KIND_GPU"),),
         "spec.serving.instanceGroup", "KIND_GPU needs resources.gpus"),
    Case("sm-unknown-format", SM, (("spec.format", "tensorrt"),), "spec.format", "Unsupported value"),
    Case("sm-unknown-runtime", SM, (("spec.serving.runtime", "tensorrt"),), "spec.serving.runtime",
         "Unsupported value"),
    Case("canary-weights-not-increasing", CR,
         (("spec.steps", [{"weight": 10}, {"weight": 5}, {"weight": 100}]),),
         "spec.steps", "strictly increasing"),
    Case("canary-weights-repeated", CR, (("spec.steps", [{"weight": 10}, {"weight": 10}]),),
         "spec.steps", "strictly increasing"),
    Case("canary-weight-over-100", CR, (("spec.steps", [{"weight": 50}, {"weight": 150}]),),
         "spec.steps[1].weight", "less than or equal to 100"),
    Case("canary-min-above-max", CR,
         (("spec.analysis.metrics", [{"name": "e", "query": "up", "min": 2, "max": 1}]),),
         "spec.analysis.metrics[0].min", "min must be <= max"),
    Case("canary-no-threshold", CR, (("spec.analysis.metrics", [{"name": "e", "query": "up"}]),),
         "spec.analysis.metrics[0]", "set min, max or both"),
    Case("canary-bad-duration", CR, (("spec.steps.0.pause", "6 hours"),), "spec.steps[0].pause", "should match"),
    Case("canary-two-candidates", CR,
         (("spec.candidate.service", {"name": "s", "port": 8000}),), "spec.candidate", "exactly one of"),
    Case("canary-empty-alert", CR, (("spec.rollbackAlerts", [{}]),), "spec.rollbackAlerts[0]",
         "needs a name or labels"),
    Case("canary-bad-duration-order", CR, (("spec.steps.0.pause", "30m1h"),), "spec.steps[0].pause",
         "should match"),
    Case("canary-bad-duration-digits", CR, (("spec.steps.0.pause", "100000s"),), "spec.steps[0].pause",
         "should match"),
    Case("canary-empty-duration", CR, (("spec.steps.0.pause", ""),), "spec.steps[0].pause", "at least 2 chars"),
    # Degenerate durations (issue 13, fault 5): floors and ceilings, each just outside.
    Case("canary-interval-zero", CR, (("spec.analysis.interval", "0s"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-interval-zero-ms", CR, (("spec.analysis.interval", "0ms"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-interval-one-ms", CR, (("spec.analysis.interval", "1ms"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-interval-under-1s", CR, (("spec.analysis.interval", "999ms"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-interval-over-1h", CR, (("spec.analysis.interval", "1h1ms"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-interval-one-day", CR, (("spec.analysis.interval", "1d"),), "spec.analysis.interval",
         "interval must be between 1s and 1h"),
    Case("canary-step-pause-zero", CR, (("spec.steps.0.pause", "0s"),), "spec.steps[0].pause",
         "pause must be between 1s and 30d"),
    Case("canary-step-pause-under-1s", CR, (("spec.steps.1.pause", "999ms"),), "spec.steps[1].pause",
         "pause must be between 1s and 30d"),
    Case("canary-step-pause-over-30d", CR, (("spec.steps.3.pause", "30d1s"),), "spec.steps[3].pause",
         "pause must be between 1s and 30d"),
    Case("canary-step-pause-hours-over-30d", CR, (("spec.steps.3.pause", "721h"),), "spec.steps[3].pause",
         "pause must be between 1s and 30d"),
    Case("canary-shadow-pause-zero", CR, (("spec.shadow.pause", "0ms"),), "spec.shadow.pause",
         "pause must be between 1s and 30d"),
    Case("canary-shadow-pause-over-30d", CR, (("spec.shadow.pause", "31d"),), "spec.shadow.pause",
         "pause must be between 1s and 30d"),
    Case("canary-shadow-unknown-mirror", CR, (("spec.shadow.mirror", "Istio"),), "spec.shadow.mirror",
         "Unsupported value"),
    Case("canary-shadow-mirror-lowercase", CR, (("spec.shadow.mirror", "traefikservice"),), "spec.shadow.mirror",
         "Unsupported value"),
    Case("canary-keep-baseline-over-30d", CR, (("spec.promotion.keepBaselineFor", "29d24h1m"),),
         "spec.promotion.keepBaselineFor", "keepBaselineFor must be between 0s and 30d"),
    Case("dj-deadline-over-30d", DJ, (("spec.run.activeDeadlineSeconds", 2592001),),
         "spec.run.activeDeadlineSeconds", "less than or equal to 2592000"),
    Case("dj-deadline-under-60s", DJ, (("spec.run.activeDeadlineSeconds", 59),),
         "spec.run.activeDeadlineSeconds", "greater than or equal to 60"),
    Case("dj-latency-budget-zero", DJ, (("spec.evaluation.latencyBudgetMs", 0),),
         "spec.evaluation.latencyBudgetMs", "latencyBudgetMs must be between 0.01 and 3600000 ms"),
    Case("dj-latency-budget-under-floor", DJ, (("spec.evaluation.latencyBudgetMs", 0.001),),
         "spec.evaluation.latencyBudgetMs", "latencyBudgetMs must be between 0.01 and 3600000 ms"),
    Case("dj-latency-budget-negative", DJ, (("spec.evaluation.latencyBudgetMs", -5),),
         "spec.evaluation.latencyBudgetMs", "latencyBudgetMs must be between 0.01 and 3600000 ms"),
    Case("dj-latency-budget-over-1h", DJ, (("spec.evaluation.latencyBudgetMs", 3600001),),
         "spec.evaluation.latencyBudgetMs", "less than or equal to 3600000"),
    Case("dj-toleration-seconds-over-30d", DJ,
         (("spec.resources.train.tolerations",
           [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2592001}]),),
         "spec.resources.train.tolerations[0].tolerationSeconds", "less than or equal to 2592000"),
    Case("sm-check-duration-zero", SM, (("spec.servingCheck", {"duration": "0s"}),),
         "spec.servingCheck.duration", "duration must be between 1s and 10m"),
    Case("sm-check-duration-over-10m", SM, (("spec.servingCheck", {"duration": "10m1s"}),),
         "spec.servingCheck.duration", "duration must be between 1s and 10m"),
    Case("sm-check-warmup-over-5m", SM, (("spec.servingCheck", {"warmup": "6m"}),),
         "spec.servingCheck.warmup", "warmup must be between 0s and 5m"),
    Case("sm-check-gate-disabled", SM, (("spec.servingCheck", {"enabled": False, "maxP95Ms": 20}),),
         "spec.servingCheck.maxP95Ms", "it needs enabled: true"),
    Case("sm-check-gate-zero", SM, (("spec.servingCheck", {"maxP95Ms": 0}),),
         "spec.servingCheck.maxP95Ms", "greater than 0"),
    Case("sm-check-concurrency-zero", SM, (("spec.servingCheck", {"concurrency": 0}),),
         "spec.servingCheck.concurrency", "greater than or equal to 1"),
    Case("dj-check-gate-disabled", DJ, (("spec.output.servingCheck", {"enabled": False, "maxP95Ms": 20}),),
         "spec.output.servingCheck.maxP95Ms", "it needs enabled: true"),
    Case("sm-check-too-many-texts", SM, (("spec.servingCheck", {"texts": ["a"] * 65}),),
         "spec.servingCheck.texts", "at most 64"),
    Case("sm-queue-delay-over-1s", SM, (("spec.serving.dynamicBatching.maxQueueDelayMicroseconds", 1000001),),
         "spec.serving.dynamicBatching.maxQueueDelayMicroseconds", "less than or equal to 1000000"),
    Case("sm-intra-op-threads-negative", SM, (("spec.serving.onnxRuntime.intraOpThreads", -1),),
         "spec.serving.onnxRuntime.intraOpThreads", "greater than or equal to 0"),
    Case("sm-intra-op-threads-over-256", SM, (("spec.serving.onnxRuntime.intraOpThreads", 257),),
         "spec.serving.onnxRuntime.intraOpThreads", "less than or equal to 256"),
    # A loss parameter its loss does not use is refused, not ignored (issue 11, part 5).
    Case("temperature-on-wrong-loss", DJ, (("spec.loss.terms.1.temperature", 2.0),),
         "spec.loss.terms[1].temperature", "temperature only applies to logit-kl"),
    Case("matryoshka-on-wrong-loss", DJ, (("spec.loss.terms.1.matryoshkaDims", [64]),),
         "spec.loss.terms[1].matryoshkaDims", "matryoshkaDims only applies to embedding-mse"),
    Case("output-dim-on-wrong-loss", DJ, (("spec.loss.terms.0.outputDim", 128),),
         "spec.loss.terms[0].outputDim", "outputDim only applies to embedding-mse"),
    Case("layer-map-on-wrong-loss", DJ, (("spec.loss.terms.0.layerMap", [1, 2]),),
         "spec.loss.terms[0].layerMap", "layerMap only applies to hidden-mse and attention-mse"),
    Case("scale-on-wrong-loss", DJ, (("spec.loss.terms.0.scale", 20.0),),
         "spec.loss.terms[0].scale", "scale only applies to infonce"),
    Case("scale-and-temperature", DJ,
         (*EMBEDDING_TASK,
          ("spec.loss.terms", [{"name": "infonce", "scale": 20.0, "temperature": 0.05}])),
         "spec.loss.terms[0].scale", "set scale or temperature, not both"),
    Case("matryoshka-beyond-output-dim", DJ,
         (*EMBEDDING_TASK,
          ("spec.loss.terms", [{"name": "embedding-mse", "outputDim": 128, "matryoshkaDims": [64, 256]}])),
         "spec.loss.terms[0].matryoshkaDims", "matryoshkaDims must not exceed outputDim"),
    Case("output-dims-disagree", DJ,
         (*EMBEDDING_TASK,
          ("spec.loss.terms", [{"name": "embedding-mse", "outputDim": 128},
                               {"name": "embedding-cosine", "outputDim": 256}])),
         "spec.loss.terms", "different outputDim values"),
    Case("min-segment-support-without-gate", DJ,
         (("spec.evaluation.maxSegmentDrop", _DELETE), ("spec.evaluation.minSegmentSupport", 5)),
         "spec.evaluation.minSegmentSupport", "minSegmentSupport only applies with maxSegmentDrop"),
    Case("min-confidence-on-embedding", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-mse"}]),
          ("spec.labeling.minConfidence", 0.5)),
         "spec.labeling", "which an embedding teacher does not give"),
    Case("relative-confidence-on-embedding", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-mse"}]),
          ("spec.labeling.minRelativeConfidence", 0.3)),
         "spec.labeling.minRelativeConfidence", "relative to the number of classes: classification only"),
    Case("bad-row-share-without-skip", DJ, (("spec.data.maxBadRowShare", 0.05),),
         "spec.data.maxBadRowShare", "maxBadRowShare caps the rows onBadRows 'skip' leaves out"),
    Case("bad-row-policy-unknown", DJ, (("spec.data.onBadRows", "ignore"),), "spec.data.onBadRows",
         "Unsupported value"),
    Case("curriculum-on-embedding", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-mse"}]),
          ("spec.training.curriculum", "confidence")),
         "spec.training.curriculum", "which an embedding teacher does not give"),
    Case("top-k-on-classification", DJ, (("spec.labeling.topK", 50),), "spec.labeling",
         "labeling.topK and labeling.maxNewTokens apply to generation only"),
    Case("all-weights-zero", DJ, (("spec.loss.terms.0.weight", 0), ("spec.loss.terms.1.weight", 0)),
         "spec.loss.terms", "at least one loss term needs a weight > 0"),
    Case("architecture-with-remote-teacher", DJ,
         (("spec.teacher", {"triton": {"url": "http://t:8000", "modelName": "t"}}),),
         "spec.student", "student.architecture copies teacher layers and needs teacher.modelUri"),
    Case("hidden-size-with-teacher-layers", DJ, (("spec.student.architecture.hiddenSize", 256),),
         "spec.student.architecture.hiddenSize", "copying teacher layers keeps the teacher's width"),
    Case("model2vec-init-with-layers", DJ, (("spec.student.architecture.init", "model2vec"),),
         "spec.student.architecture.init", "init model2vec builds a static student"),
    Case("dj-min-segment-support-zero", DJ, (("spec.evaluation.minSegmentSupport", 0),),
         "spec.evaluation.minSegmentSupport", "greater than or equal to 1"),
    Case("canary-duplicate-metric", CR,
         (("spec.analysis.metrics.1.name", "error-rate"),), "spec.analysis.metrics", "metric names must be unique"),
    Case("canary-alerts-without-prometheus", CR, (("spec.analysis", _DELETE),),
         "spec.rollbackAlerts", "rollbackAlerts need analysis.prometheusUrl"),
    # The candidate is the baseline's own backendRef (issue 13, fault 6).
    Case("canary-candidate-is-baseline", CR,
         (("spec.candidate.studentModel", _DELETE),
          ("spec.candidate.service", {"name": "sentiment-teacher", "port": 8000})),
         "spec.candidate.service", "must not be the baseline"),
    # Live agreement (issue 17): the judge's rate floor, its sampling, and the sequential test on it.
    Case("canary-sequential-without-agreement", CR, (("spec.analysis.sequential", {}),),
         "spec.analysis.sequential", "set analysis.agreement too"),
    Case("canary-agreement-rate-over-one", CR, (("spec.analysis.agreement", {"minRate": 1.5}),),
         "spec.analysis.agreement.minRate", "less than or equal to 1"),
    Case("canary-agreement-sample-zero", CR, (("spec.analysis.agreement", {"minRate": 0.9, "samplePercent": 0}),),
         "spec.analysis.agreement.samplePercent", "greater than or equal to 1"),
    Case("canary-agreement-window-under-1m", CR, (("spec.analysis.agreement", {"minRate": 0.9, "window": "59s"}),),
         "spec.analysis.agreement.window", "window must be between 1m and 1d"),
    Case("canary-agreement-mean-cosine-classification", CR,
         (("spec.analysis.agreement", {"minRate": 0.9, "task": "classification", "minMeanCosine": 0.9}),),
         "spec.analysis.agreement.minMeanCosine", "embedding task only"),
    Case("canary-agreement-service-without-task", CR,
         (("spec.candidate.studentModel", _DELETE),
          ("spec.candidate.service", {"name": "sentiment-student", "port": 8000}),
          ("spec.analysis.agreement", {"minRate": 0.9})),
         "spec.analysis.agreement.task", "agreement.task is needed"),
    Case("canary-sequential-delta-reaches-zero", CR,
         (("spec.analysis.agreement", {"minRate": 0.02}), ("spec.analysis.sequential", {"delta": 0.02})),
         "spec.analysis.sequential.delta", "0 < agreement.minRate - sequential.delta"),
    Case("canary-sequential-rate-one", CR,
         (("spec.analysis.agreement", {"minRate": 1}), ("spec.analysis.sequential", {})),
         "spec.analysis.sequential.delta", "agreement.minRate < 1"),
    Case("canary-sequential-alpha-plus-beta", CR,
         (("spec.analysis.agreement", {"minRate": 0.9}), ("spec.analysis.sequential", {"alpha": 0.5, "beta": 0.5})),
         "spec.analysis.sequential.beta", "alpha + beta must be below 1"),
    Case("canary-sequential-min-pause-zero", CR,
         (("spec.analysis.agreement", {"minRate": 0.9}), ("spec.analysis.sequential", {"minPause": "0s"})),
         "spec.analysis.sequential.minPause", "minPause must be between 1s and 30d"),
]

# Values on the edge of a rule, which the API server and the models must both accept.
ACCEPTED = [
    Case("agreement-without-labels", DJ,
         (("spec.data.fields.label", _DELETE), ("spec.evaluation.primaryMetric", "agreement"),
          ("spec.evaluation.metrics", ["agreement"]))),
    Case("every-classification-metric", DJ,
         (("spec.evaluation.metrics", ["accuracy", "macro_precision", "macro_recall", "macro_f1", "agreement"]),)),
    Case("interval-floor", CR, (("spec.analysis.interval", "1s"),)),
    Case("interval-floor-ms", CR, (("spec.analysis.interval", "1000ms"),)),
    Case("interval-ceiling", CR, (("spec.analysis.interval", "1h"),)),
    Case("interval-ceiling-parts", CR, (("spec.analysis.interval", "0d59m60s"),)),
    Case("step-pause-floor", CR, (("spec.steps.0.pause", "1s"),)),
    Case("step-pause-ceiling", CR, (("spec.steps.3.pause", "30d"),)),
    Case("step-pause-ceiling-parts", CR, (("spec.steps.3.pause", "29d23h59m59s1000ms"),)),
    Case("step-pause-every-unit", CR, (("spec.steps.3.pause", "1d2h3m4s5ms"),)),
    Case("step-pause-ceiling-hours", CR, (("spec.steps.3.pause", "720h"),)),
    Case("shadow-pause-floor", CR, (("spec.shadow.pause", "1s"),)),
    Case("shadow-pause-ceiling", CR, (("spec.shadow.pause", "30d"),)),
    Case("shadow-mirror-traefik-service", CR, (("spec.shadow.mirror", "TraefikService"),)),
    Case("shadow-mirror-request-mirror", CR, (("spec.shadow.mirror", "RequestMirror"), ("spec.shadow.percent", 1))),
    Case("agreement-sequential-defaults", CR,
         (("spec.analysis.agreement", {"minRate": 0.95}), ("spec.analysis.sequential", {}))),
    Case("agreement-sequential-edges", CR,
         (("spec.analysis.agreement", {"minRate": 0.03, "samplePercent": 100, "window": "1d", "task": "embedding",
                                       "minMeanCosine": -1, "perSegmentFloor": 0}),
          ("spec.analysis.sequential", {"delta": 0.02, "alpha": 0.5, "beta": 0.4, "minPause": "1s"}))),
    Case("agreement-window-floor", CR,
         (("spec.analysis.agreement", {"minRate": 1, "samplePercent": 1, "window": "1m"}),)),
    Case("embedding-cosine-without-pair", DJ,  # a metric that needs no pair stays allowed
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-cosine"}]))),
    Case("embedding-retrieval-metric-with-pair", DJ,
         (*EMBEDDING_TASK, ("spec.loss.terms", [{"name": "embedding-cosine"}]), ("spec.data.fields.pair", "answer"),
          ("spec.evaluation.primaryMetric", "ndcg@10"))),
    Case("keep-baseline-zero", CR, (("spec.promotion.keepBaselineFor", "0s"),)),
    Case("keep-baseline-ceiling", CR, (("spec.promotion.keepBaselineFor", "30d"),)),
    Case("candidate-baseline-other-port", CR,
         (("spec.candidate.studentModel", _DELETE),
          ("spec.candidate.service", {"name": "sentiment-teacher", "port": 8001}))),
    Case("candidate-other-name-same-port", CR,
         (("spec.candidate.studentModel", _DELETE),
          ("spec.candidate.service", {"name": "sentiment-student", "port": 8000}))),
    Case("dj-time-bounds", DJ,
         (("spec.run.activeDeadlineSeconds", 2592000), ("spec.evaluation.latencyBudgetMs", 0.01),
          ("spec.resources.train.tolerations",
           [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2592000}]))),
    Case("dj-time-bounds-other-end", DJ,
         (("spec.run.activeDeadlineSeconds", 60), ("spec.evaluation.latencyBudgetMs", 3600000))),
    Case("sm-queue-delay-bounds", SM, (("spec.serving.dynamicBatching.maxQueueDelayMicroseconds", 1000000),)),
    Case("sm-queue-delay-zero", SM, (("spec.serving.dynamicBatching.maxQueueDelayMicroseconds", 0),)),
    Case("sm-onnx-runtime-bounds", SM, (("spec.serving.onnxRuntime", {"intraOpThreads": 256, "allowSpinning": True}),)),
    Case("sm-check-bounds", SM, (("spec.servingCheck", {"concurrency": 256, "duration": "10m", "warmup": "0s",
                                                         "maxP95Ms": 3600000, "texts": ["x" * 2048] * 64}),)),
    Case("sm-check-off", SM, (("spec.servingCheck", {"enabled": False}),)),
    Case("sm-check-floor", SM, (("spec.servingCheck", {"concurrency": 1, "duration": "1s", "warmup": "5m",
                                                        "maxP95Ms": 0.01}),)),
    Case("matryoshka-up-to-output-dim-shared-by-terms", DJ,
         (*EMBEDDING_TASK,
          ("spec.loss.terms", [{"name": "embedding-mse", "outputDim": 128, "matryoshkaDims": [64, 128]},
                               {"name": "embedding-cosine", "outputDim": 128}, {"name": "infonce"}])),
         ),
    Case("teacher-embeddings-init-with-layers", DJ, (("spec.student.architecture.init", "teacher-embeddings"),)),
    Case("model2vec-init-static", DJ,
         (("spec.student.architecture.numLayers", 0), ("spec.student.architecture.fromTeacherLayers", _DELETE),
          ("spec.student.architecture.init", "model2vec"))),
    Case("min-segment-support-with-its-gate", DJ, (("spec.evaluation.minSegmentSupport", 5),)),
    Case("bad-rows-skipped-up-to-a-share", DJ, (("spec.data.onBadRows", "skip"), ("spec.data.maxBadRowShare", 1))),
    Case("relative-confidence-on-classification", DJ,
         (("spec.labeling.minRelativeConfidence", 1), ("spec.labeling.maxDroppedShare", 0))),
]


@dataclass(frozen=True)
class Transition:
    """An edit of a stored object that a CEL transition rule (one reading `oldSelf`) must refuse. Only the API
    server holds the stored object, so these run against it alone (tests/integration)."""

    id: str
    spec_patch: dict[str, Any]  # merge patch of .spec applied to HELD_ROLLOUT once it exists
    field: str
    words: str


# A rollout created as is, then edited by each Transition.
HELD_ROLLOUT: dict[str, Any] = {
    "apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout", "metadata": {"name": "held"},
    "spec": {"route": {"name": "r"}, "baseline": {"name": "teacher", "port": 8000},
             "candidate": {"service": {"name": "student", "port": 8000}},
             "steps": [{"weight": 10, "pause": "1h"}]},
}

TRANSITIONS = [
    Transition("route-name", {"route": {"name": "other"}}, "spec.route", "route is immutable"),
    Transition("rule-index", {"route": {"name": "r", "ruleIndex": 1}}, "spec.route", "route is immutable"),
    Transition("baseline", {"baseline": {"name": "teacher", "port": 9000}}, "spec.baseline",
               "baseline is immutable"),
    Transition("candidate", {"candidate": {"service": {"name": "student-v2", "port": 8000}}}, "spec.candidate",
               "candidate is immutable"),
]
