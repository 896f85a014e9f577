"""accelbench.builder: pipeline programs, the correctness gate, synthetic models and the generate stage."""
