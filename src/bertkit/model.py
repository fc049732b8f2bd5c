"""BERT, top to bottom: embeddings, the post-LN Transformer encoder, pooler and task heads.

Module and attribute names follow the checkpoint key names (HF's, which are Google's with
dots): ``bert.encoder.layer.3.attention.self.query.weight`` is Google's
``bert/encoder/layer_3/attention/self/query/kernel`` transposed. That keeps every converter
a lookup table. Shapes: B batch, T sequence length, H hidden size, nh heads, hs head size,
P masked positions per sequence, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertkit.config import BertConfig


def activation(name: str):
    """The function for a bertkit activation name (see config.ACTIVATIONS)."""
    if name == "gelu":
        return F.gelu  # exact: 0.5·x·(1 + erf(x/√2))
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return {"relu": F.relu, "silu": F.silu, "tanh": torch.tanh}[name]


@dataclass
class BertOutput:
    """What every BERT module returns; fields a head does not compute stay None."""

    last_hidden_state: Tensor  # (B, T, H)
    hidden_states: tuple[Tensor, ...]  # embedding output, then every layer: L+1 × (B, T, H)
    pooled_output: Tensor | None = None  # (B, H): tanh(dense(h[CLS]))
    mlm_logits: Tensor | None = None  # (B, P, V) at masked_lm_positions, else (B, T, V)
    nsp_logits: Tensor | None = None  # (B, 2): column 0 IsNext, 1 random
    logits: Tensor | None = None  # classification (B, num_labels) / token classification (B, T, num_labels)
    start_logits: Tensor | None = None  # QA (B, T)
    end_logits: Tensor | None = None  # QA (B, T)


# --- embeddings -------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        # NEZHA replaces absolute positions by relative ones inside attention.
        self.position_embeddings = (
            None if config.use_relative_positions
            else nn.Embedding(config.max_position_embeddings, config.hidden_size)
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings.weight[: input_ids.shape[1]]  # broadcast over B
        return self.dropout(self.LayerNorm(x))


# --- encoder ----------------------------------------------------------------------------------


def relative_position_table(length: int, depth: int, max_distance: int, device=None) -> Tensor:
    """NEZHA's functional relative positions: (T, T, depth) sinusoids of clip(j - i) + max.

    Fixed, not learned (Wei et al. 2019, "NEZHA", §3.2); index 0 is distance -max.
    """
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).clamp(-max_distance, max_distance) + max_distance
    index = torch.arange(2 * max_distance + 1, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, depth, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / depth))
    table = torch.zeros(2 * max_distance + 1, depth, device=device)
    table[:, 0::2] = torch.sin(index * freq)
    table[:, 1::2] = torch.cos(index * freq)[:, : depth // 2]
    return table[distance]  # (T, T, depth)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over one sequence batch.

    Fast path: torch's fused scaled_dot_product_attention. Relative positions (NEZHA) need the
    attention probabilities themselves, so they take the explicit path.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: Tensor, mask: Tensor | None, rel: Tensor | None = None) -> Tensor:
        """x (B, T, H); mask (B, 1, 1, T) bool, True = attend, or None; rel (T, T, hs)."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        p = self.dropout_p if self.training else 0.0
        if rel is None:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            ctx = self._relative_attention(q, k, v, mask, rel, p)
        B, _, T, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(B, T, self.num_heads * self.head_size)  # (B, T, H)

    @staticmethod
    def _relative_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rel: Tensor, p: float) -> Tensor:
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)  # (B, nh, T, T)
        scores = scores / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(-1), p)
        return probs @ v + torch.einsum("bhij,ijd->bhid", probs, rel)  # (B, nh, T, hs)


class BertSelfOutput(nn.Module):
    """Projection back to H, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)  # named "self" as in every BERT checkpoint
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None, rel: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask, rel), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))  # (B, T, I)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def forward(self, x: Tensor, mask: Tensor | None, rel: Tensor | None) -> Tensor:
        x = self.attention(x, mask, rel)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, mask: Tensor | None, rel: Tensor | None) -> list[Tensor]:
        """Returns the output of every layer, first to last."""
        outputs = []
        for layer in self.layer:
            x = layer(x, mask, rel)
            outputs.append(x)
        return outputs


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, H) from the [CLS] position


class BertModel(nn.Module):
    """The bare encoder: embeddings, L Transformer layers, pooler.

    Token-level heads have no pooler (as in HF's BertForTokenClassification/QuestionAnswering);
    their pooled_output is None.
    """

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T); mask 1 = real token, 0 = padding."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        # An all-ones mask is dropped so SDPA can take its unmasked kernel; under torch.compile the
        # check would be a graph break (a data-dependent branch), so the mask is always kept there.
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys to attend to
        rel = None
        if self.config.use_relative_positions:
            rel = relative_position_table(input_ids.shape[1], self.config.head_size,
                                          self.config.max_relative_position, input_ids.device)
        x = self.embeddings(input_ids, token_type_ids)
        layers = self.encoder(x, mask, rel.to(x.dtype) if rel is not None else None)
        last = layers[-1] if layers else x
        pooled = self.pooler(last) if self.pooler is not None else None
        return BertOutput(last_hidden_state=last, hidden_states=(x, *layers), pooled_output=pooled)


# --- heads ------------------------------------------------------------------------------------


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """MLM: transform, then logits = x · word_embeddingsᵀ + bias (decoder tied to the embeddings)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x)) + self.bias  # (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(nn.Module):
    """Encoder + MLM head + NSP head (Google's run_pretraining heads)."""

    head = "pretraining"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        masked_lm_positions: Tensor | None = None,
    ) -> BertOutput:
        """masked_lm_positions (B, P): run the MLM head only there (padding slots may point at 0)."""
        out = self.bert(input_ids, token_type_ids, attention_mask)
        h = out.last_hidden_state
        if masked_lm_positions is not None:
            index = masked_lm_positions.long()[:, :, None].expand(-1, -1, h.shape[-1])  # (B, P, H)
            h = torch.gather(h, 1, index)
        out.mlm_logits = self.cls.predictions(h)
        out.nsp_logits = self.cls.seq_relationship(out.pooled_output)
        return out


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] → dropout → linear; num_labels 1 is regression."""

    head = "classification"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask)
        out.logits = self.classifier(self.dropout(out.pooled_output))  # (B, num_labels)
        return out


class BertForTokenClassification(nn.Module):
    """Every token's hidden state → dropout → linear (NER tagging)."""

    head = "token_classification"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask)
        out.logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        return out


class BertForQuestionAnswering(nn.Module):
    """Span QA: a linear layer gives each token a start and an end logit."""

    head = "qa"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> BertOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask)
        start, end = self.qa_outputs(out.last_hidden_state).unbind(-1)  # 2 × (B, T)
        out.start_logits, out.end_logits = start, end
        return out


HEAD_CLASSES: dict[str | None, type[nn.Module]] = {
    None: BertModel,
    "pretraining": BertForPreTraining,
    "classification": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
    "qa": BertForQuestionAnswering,
}


def build_model(config: BertConfig, head: str | None = None) -> nn.Module:
    """A freshly initialised model, weights drawn as Google does (truncated normal, ±2σ)."""
    model = HEAD_CLASSES[head](config)
    model.apply(lambda m: init_weights(m, config.initializer_range))
    return model


def init_weights(module: nn.Module, std: float) -> None:
    """Google's initializer: truncated normal(σ) for matrices and tables, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, BertLMPredictionHead):
        nn.init.zeros_(module.bias)
