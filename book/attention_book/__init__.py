"""attention_book: the code of the book *Attention Zero To One* that is not the library.

* :mod:`attention_book.exercises` -- the auto-checks of every chapter's exercises
  (``from attention_book.exercises import ch07``; ``ch07.check_...(your_function)``);
* :mod:`attention_book.figures` -- the chapters' small interactive figures: softmax temperature
  (chapter 01), positional encodings (03), sampling (08).

It is built on :mod:`transformer_core` (the model code a reader imports, with its attention
explorers in :mod:`transformer_core.viz`) and imports from it; ``transformer_core`` never imports
``attention_book`` and installs without it.
"""
