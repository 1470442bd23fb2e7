"""builder.engine"""
