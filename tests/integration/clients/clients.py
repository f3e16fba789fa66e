"""Real client libraries against a live nlpd, run by the test venv's python
(/opt/nlpd-test, scripts/install_deps.sh) from test_clients.py:

    python clients.py openai|langchain|llamaindex BASE_URL MODEL TEXT...

Prints one JSON object with what the library returned (embeddings, errors)."""
import asyncio
import json
import sys


def openai_client(base, model, texts):
    import openai

    c = openai.OpenAI(base_url=base + "/v1", api_key="unused-without-auth", max_retries=0)
    out = {}
    # The SDK asks for base64 by default and decodes it itself.
    r = c.embeddings.create(input=texts[0], model=model)
    out["single_default"] = r.data[0].embedding
    out["single_usage"] = [r.usage.prompt_tokens, r.usage.total_tokens]
    out["object"], out["model"] = r.object, r.model
    r = c.embeddings.create(input=texts, model=model, encoding_format="float")
    out["list_float"] = [d.embedding for d in r.data]
    out["indices"] = [d.index for d in r.data]
    r = c.embeddings.create(input=texts, model=model, encoding_format="base64")
    out["list_base64"] = [d.embedding for d in r.data]
    dim = len(out["single_default"])
    r = c.embeddings.create(input=texts[0], model=model, dimensions=dim)
    out["dimensions_ok"] = len(r.data[0].embedding)

    def error(**kw):
        try:
            c.embeddings.create(**kw)
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            return {"status": e.status_code, "type": type(e).__name__, "message": e.message,
                    "code": e.code, "error_type": e.type}
        return None

    out["dimensions_bad"] = error(input=texts[0], model=model, dimensions=dim // 2)
    # What LangChain's OpenAIEmbeddings sends by default: token ids of OpenAI's tokenizer.
    out["token_ids"] = error(input=[[9906, 1917], [15339]], model=model)
    out["token_ids_flat"] = error(input=[9906, 1917], model=model)
    out["unknown_model"] = error(input=texts[0], model="text-embedding-3-small")
    return out


def langchain_client(base, model, texts):
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=model, base_url=base + "/v1", api_key="unused-without-auth",
                           check_embedding_ctx_length=False, max_retries=0)
    return {"documents": emb.embed_documents(texts), "query": emb.embed_query(texts[0]),
            "adocuments": asyncio.run(emb.aembed_documents(texts))}


def llamaindex_client(base, model, texts):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    emb = TextEmbeddingsInference(model_name=model, base_url=base, timeout=60)
    return {"batch": emb.get_text_embedding_batch(texts), "query": emb.get_query_embedding(texts[0]),
            "text": emb.get_text_embedding(texts[1]),
            "aquery": asyncio.run(emb.aget_query_embedding(texts[0]))}


if __name__ == "__main__":
    kind, base, model, *texts = sys.argv[1:]
    fn = {"openai": openai_client, "langchain": langchain_client,
          "llamaindex": llamaindex_client}[kind]
    json.dump(fn(base, model, texts), sys.stdout)
