"""attention_book: the code of the book *Attention Zero To One* that is not the library.

* :mod:`attention_book.grammar` -- the story grammar that wrote the corpus, its exact parser and
  the grammatical share of what a model writes; :mod:`attention_book.floor` -- the corpus's entropy,
  the lowest loss any model can reach; :mod:`attention_book.translation` -- English -> Tolan, the
  encoder-decoder's translation task with its exact checker (the book's ground truth, not the
  Transformer, so they live here);
* :mod:`attention_book.exercises` -- the auto-checks of every chapter's exercises
  (``from attention_book.exercises import ch07``; ``ch07.check_...(your_function)``);
* :mod:`attention_book.figures` -- the chapters' small interactive figures: softmax temperature
  (chapter 01), positional encodings (03), sampling (08).

It is built on :mod:`transformer_core` (the model code a reader imports, with its attention
explorers in :mod:`transformer_core.viz`) and imports from it; ``transformer_core`` never imports
``attention_book`` and installs without it.
"""
