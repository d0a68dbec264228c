from stub_service import serve

serve("cluster")
