"""builder.sandbox"""
