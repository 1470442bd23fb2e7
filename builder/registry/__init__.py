"""builder.registry"""
