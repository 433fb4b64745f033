"""kopt.verifier"""
