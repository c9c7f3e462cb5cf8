"""Training the embedded gated model: corpus, tokenizer, models, loop, evaluation and shipping
(the commands are `heedful train`, `heedful train evaluate`, `heedful train ship`)."""
