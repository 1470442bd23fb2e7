"""builder.plan"""
