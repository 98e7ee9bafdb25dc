"""Downstream tasks as recipes: task data + task head and loss + metric, trained by the same engine.

* :mod:`.modules`: the VQA and NLVR2 modules (the pre-trained towers and fusion plus a head);
* :mod:`.start`: where a fine-tuning run's weights come from (a pre-trained checkpoint, or none);
* :mod:`.vqa`, :mod:`.nlvr2`: each task's data (the synthetic world or the datasets' files), its
  engine job and its evaluation.

Fine-tuned retrieval is pre-training's own module on a retrieval recipe (ITC + ITM), evaluated by
zero-shot retrieval's code; the pipeline runs it (:mod:`maskvlp.pipeline`).
"""
