"""builder.oci"""
