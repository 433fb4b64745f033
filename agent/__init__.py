"""kopt.agent"""
