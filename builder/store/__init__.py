"""builder.store"""
