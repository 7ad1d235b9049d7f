"""medlab: reproducible recipes for Chinese medical language models.

The package is the library the notebooks in ``notebooks/`` call; notebooks are recipes
and are never imported. One module = one idea; each package's ``__init__`` lists its
modules, and README.md's Layout section lists them all. In short:

    config, section        params.yaml -> typed, validated sections (each stage owns its own)
    runtime                the one place Hugging Face models load and train
    embedded/              the embedded world: corpus, benchmarks, the simulated teacher
    knowledge, formats     the bundled knowledge base; readers for public data formats
    pretrain, generate, filter, finetune, evaluate, probe, report   one package per stage
"""

__version__ = "0.1.0"
