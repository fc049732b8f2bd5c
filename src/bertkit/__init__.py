"""bertkit: a complete, fast, faithful BERT system on PyTorch.

Stable API:
    load_model(path, head=None, **config_overrides)  -> eval-mode torch module, any checkpoint format
    load_tokenizer(path_or_vocab, lower_case=None)   -> Google-exact WordPiece tokenizer
    BertConfig, preset(name), build_model(config, head)
"""

from bertkit.config import BertConfig, preset
from bertkit.convert.checkpoint import export_google, export_hf, read_checkpoint, save_bertkit
from bertkit.convert.load import load_model
from bertkit.errors import BertkitError
from bertkit.model import BertOutput, build_model
from bertkit.tokenizer import BertTokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "BertOutput", "BertTokenizer", "BertkitError", "build_model", "export_google",
    "export_hf", "load_model", "load_tokenizer", "preset", "read_checkpoint", "save_bertkit",
]
