"""The plugin kit: readers of the model files backends load, shared so that each plugin does not
write its own. Nothing here imports an engine; the user API never needs these modules.

- :mod:`.gguf`: a strict GGUF header reader (a pre-flight check before an engine mmaps the file);
- :mod:`.hf_tokenizer`: facts from a Hugging Face tokenizer folder (special tokens, BOS, EOS);
- :mod:`.folder_template`: a model folder's own chat template;
- :mod:`.hf_folder`: the ``EngineInfo`` of a Hugging Face folder (tokenizer files + template);
- :mod:`.json_files`: bounded, one-line-error JSON reading;
- :mod:`.engine_options`: engine options checked against a dataclass, with "did you mean".
"""
