"""kopt.harness"""
