"""Evaluation entry point (the same as `longdoc-evaluate`); `mode=` picks the job (src/longdoc/conf/evaluate.yaml):

    python evaluate.py ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt   # metrics (default)
    python evaluate.py mode=lra_table 'runs=[outputs/train/runs/*]'                 # LRA Table 1 beside ours
    python evaluate.py mode=efficiency 'efficiency.lengths=[512,1024,2048,4096]'    # LRA Table 2: steps/s, memory
    python evaluate.py mode=attention_pattern [ckpt_path=...]                       # attended pairs, N x N
"""

from longdoc.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
