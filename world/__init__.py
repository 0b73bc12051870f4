"""world: the stand-ins for what the paper takes as given. tasks.py (ops, rules, problems, the
verifier, the named tasks) and bpe.py (the tokenizer); reflectors.py and llm.py (the reflection LM:
simulated, or any OpenAI-compatible endpoint); pretrain.py (the base model, the paper's pretrained
LLM)."""
