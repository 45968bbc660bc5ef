"""The second retrieval set: the Python language reference, asked in its own terms.

Same corpus and document ids as :mod:`aictl.evaluation.python_reference` (the topics of
``pydoc_data``), written the other way round. That set asks as a user asks and avoids
the reference's words ("leave a loop early" for ``break``); this one asks in the words
of the reference itself, as a developer types into a search box who already knows what
the thing is called: mostly keyword queries ("augmented assignment statement target
evaluation"), some questions that reuse the topics' own phrases ("What does the
nonlocal statement do with the nearest enclosing scope excluding globals?"), names of
special methods and grammar symbols as the texts spell them (``__getattr__``,
``proper_slice``). So lexical matching has its natural advantage here, where the first
set gives it none; neither set is the method's own.

How it was written and labelled: 88 queries, each made from the terms of the section
that answers it (the query's words were looked up in that topic, and each query checked
against every topic holding most of its words, to find the other topics that answer
too). It covers topics the first set leaves out (``atom-literals``,
``attribute-references``, ``bltin-code-objects``, ``bltin-type-objects``, ``lists``,
``subscriptions``, ``typesmodules``, ``unary``, ``return``, ``compound`` as the home of
the ``match`` statement...). Graded relevance, by the first set's rules:

- 2: the topic that answers (both ``if`` and ``else``, whose texts are the same);
- 1: a topic that answers in part, or holds the answering topic's text inside a much
  longer one (``compound``, ``specialnames``, ``execmodel``/``naming``, ``typesseq``,
  ``assignment``, ``identifiers``, ``comparisons``, as listed in the first set).

Written in the same session as the paired comparison that reads it, but before any
method was run on it; no query was changed after seeing a method's ranking.
"""

from __future__ import annotations

from aictl.evaluation.python_reference import RetrievalCase


def _case(question: str, **relevance: int) -> RetrievalCase:
    # Keyword names cannot hold "-": topic keys are written with "_" here.
    return RetrievalCase(question, {k.replace("_", "-"): v for k, v in relevance.items()})


TERMS_SET: tuple[RetrievalCase, ...] = (
    _case(
        "assert statement AssertionError __debug__ optimization requested",
        **{"assert": 2},
    ),
    _case(
        "assignment statement target list starred target unpacking iterable",
        assignment=2,
    ),
    _case(
        "augmented assignment statement target evaluation",
        augassign=2,
        assignment=1,
    ),
    _case(
        "coroutine function definition async def",
        **{"async": 2, "compound": 1, "await": 1},
    ),
    _case(
        "await expression suspend the execution of coroutine on an awaitable object",
        **{"await": 2, "async": 1, "compound": 1},
    ),
    _case(
        "async for statement asynchronous iterable __aiter__ __anext__",
        **{"async": 2, "compound": 1},
    ),
    _case(
        "private name mangling identifier begins with two underscores in a class definition",
        atom_identifiers=2,
        id_classes=1,
        identifiers=1,
    ),
    _case(
        "literals evaluation yields object immutable data types identity less important",
        atom_literals=2,
    ),
    _case(
        "__getattr__ __getattribute__ AttributeError customizing attribute access",
        attribute_access=2,
        specialnames=1,
        attribute_references=1,
    ),
    _case(
        "implementing descriptors __get__ __set__ __delete__ owner class",
        attribute_access=2,
        specialnames=1,
    ),
    _case(
        "__slots__ declaration deny creation of __dict__ and __weakref__",
        attribute_access=2,
        specialnames=1,
    ),
    _case(
        "attribute reference primary followed by a period and a name",
        attribute_references=2,
    ),
    _case(
        "binary arithmetic operations multiplicative operators floor division modulo",
        binary=2,
    ),
    _case(
        "What does the @ operator for matrix multiplication call, __matmul__?",
        binary=2,
        numeric_types=1,
        operator_summary=1,
        specialnames=1,
    ),
    _case(
        "binary bitwise operations & ^ | bitwise AND exclusive OR inclusive OR of integers",
        bitwise=2,
    ),
    _case(
        "code objects compile() __code__ attribute exec() eval()",
        bltin_code_objects=2,
        types=1,
    ),
    _case(
        "Ellipsis object singleton written as ...",
        bltin_ellipsis_object=2,
        types=1,
    ),
    _case(
        "null object None returned by functions that don't explicitly return a value",
        bltin_null_object=2,
        **{"return": 1},
        types=1,
    ),
    _case(
        "type objects built-in function type() <class 'int'>",
        bltin_type_objects=2,
    ),
    _case(
        "Boolean operations or and not: which values are interpreted as false, what x and y "
        "returns",
        booleans=2,
        truth=1,
    ),
    _case(
        "break statement terminates the nearest enclosing loop skipping the else clause",
        **{"break": 2, "for": 1, "while": 1},
    ),
    _case(
        "emulating callable objects object.__call__",
        callable_types=2,
        specialnames=1,
    ),
    _case(
        "call argument_list positional arguments keyword arguments *expression **expression",
        calls=2,
        function=1,
    ),
    _case(
        "class definition inheritance list base classes class decorators",
        **{"class": 2, "compound": 1},
    ),
    _case(
        "metaclass customizing class creation __init_subclass__ __prepare__",
        specialnames=2,
        **{"class": 1, "compound": 1},
    ),
    _case(
        "chained comparisons x < y <= z same priority comparison operators",
        comparisons=2,
    ),
    _case(
        "identity comparisons is and is not operators object identity",
        comparisons=2,
        objects=1,
    ),
    _case(
        "compound statements clause header suite NEWLINE INDENT DEDENT",
        compound=2,
    ),
    _case(
        "match statement case block pattern matching capture pattern wildcard",
        compound=2,
        identifiers=1,
    ),
    _case(
        "context manager __enter__ __exit__ runtime context",
        context_managers=2,
        **{"with": 2},
        compound=1,
        specialnames=1,
    ),
    _case(
        "continue statement continues with the next cycle of the nearest enclosing loop",
        **{"continue": 2},
    ),
    _case(
        "arithmetic conversions numeric arguments converted to a common type",
        conversions=2,
        binary=1,
    ),
    _case(
        "basic customization object.__new__ __init__ __del__ __repr__ __str__",
        customization=2,
        specialnames=1,
    ),
    _case(
        "__hash__ hashable __eq__ rich comparison methods __lt__ __le__",
        customization=2,
        specialnames=1,
        comparisons=1,
    ),
    _case(
        "pdb debugger commands break step next continue where",
        debugger=2,
    ),
    _case(
        "post-mortem debugging pdb.pm() traceback",
        debugger=2,
    ),
    _case(
        "del statement deletion of a target list removes the binding of that name",
        **{"del": 2},
    ),
    _case(
        "dictionary display dict comprehension key/value pairs enclosed in curly braces",
        dict=2,
        typesmapping=1,
    ),
    _case(
        "interaction with dynamic features free variables eval() exec() global and local namespace",
        dynamic_features=2,
        execmodel=1,
        naming=1,
    ),
    _case(
        "if statement elif else conditional execution",
        **{"if": 2, "else": 2, "compound": 1},
    ),
    _case(
        "exceptions raised handled termination model of error handling",
        exceptions=2,
        execmodel=1,
        **{"try": 1},
    ),
    _case(
        "execution model structure of a program code blocks execution frame",
        execmodel=2,
        naming=1,
    ),
    _case(
        "expression list containing at least one comma yields a tuple",
        exprlists=2,
    ),
    _case(
        "floating point literals exponent fraction digitpart",
        floating=2,
        numbers=1,
    ),
    _case(
        "for statement iterate over the elements of a sequence iterator target list",
        **{"for": 2, "compound": 1},
    ),
    _case(
        "format string syntax replacement field conversion !r !s format_spec",
        formatstrings=2,
    ),
    _case(
        "format specification mini-language fill align sign width precision",
        formatstrings=2,
    ),
    _case(
        "function definition decorators default parameter values evaluated once",
        function=2,
        compound=1,
    ),
    _case(
        "global statement declaration listed identifiers interpreted as globals",
        **{"global": 2},
        naming=1,
    ),
    _case(
        "reserved classes of identifiers _* __*__ system-defined names class-private names",
        id_classes=2,
        identifiers=1,
    ),
    _case(
        "identifiers and keywords soft keywords match case _",
        identifiers=2,
        id_classes=1,
    ),
    _case(
        "imaginary literals complex number with a real part of 0.0",
        imaginary=2,
        numbers=1,
    ),
    _case(
        "import statement relative import from module import * __all__",
        **{"import": 2},
    ),
    _case(
        "future statements from __future__ import",
        **{"import": 2},
    ),
    _case(
        "membership test operations in and not in __contains__",
        **{"in": 2},
        comparisons=1,
        sequence_types=1,
        specialnames=1,
        typesseq=1,
    ),
    _case(
        "integer literals hexinteger octinteger bininteger underscores",
        integers=2,
        numbers=1,
    ),
    _case(
        "lambda expression anonymous function",
        **{"lambda": 2},
    ),
    _case(
        "list display square brackets comprehension",
        lists=2,
    ),
    _case(
        "naming and binding resolution of names scope UnboundLocalError",
        naming=2,
        execmodel=1,
    ),
    _case(
        "nonlocal statement previously bound variables in the nearest enclosing scope "
        "excluding globals",
        **{"nonlocal": 2},
        naming=1,
    ),
    _case(
        "numeric literals integers floating point numbers imaginary numbers no complex literals",
        numbers=2,
    ),
    _case(
        "emulating numeric types __add__ __radd__ reflected operands __iadd__",
        numeric_types=2,
        specialnames=1,
    ),
    _case(
        "objects values and types identity mutable immutable garbage collection",
        objects=2,
    ),
    _case(
        "operator precedence table from highest precedence to lowest",
        operator_summary=2,
    ),
    _case(
        "pass statement null operation placeholder",
        **{"pass": 2},
    ),
    _case(
        "power operator binds more tightly than unary operators on its left",
        power=2,
        operator_summary=1,
    ),
    _case(
        "raise statement exception chaining from clause __cause__ __context__",
        **{"raise": 2},
    ),
    _case(
        "return statement leaves the current function call with the expression list or None",
        **{"return": 2},
    ),
    _case(
        "emulating container types __len__ __getitem__ __setitem__ __iter__",
        sequence_types=2,
        specialnames=1,
    ),
    _case(
        "shifting operations left shift right shift pow(2,n)",
        shifting=2,
    ),
    _case(
        "slicing proper_slice lower_bound upper_bound stride",
        slicings=2,
    ),
    _case(
        "special attributes __dict__ __class__ __bases__ __qualname__ __mro__",
        specialattrs=2,
    ),
    _case(
        "string methods str.split str.strip str.join",
        string_methods=2,
    ),
    _case(
        "string and bytes literals escape sequences raw strings triple-quoted",
        strings=2,
    ),
    _case(
        "string literal with f or F in its prefix formatted string literal raw formatted strings",
        strings=2,
        formatstrings=1,
    ),
    _case(
        "subscription of a generic class __class_getitem__ GenericAlias",
        subscriptions=2,
        specialnames=1,
        sequence_types=1,
    ),
    _case(
        "truth value testing __bool__ __len__ objects considered false",
        truth=2,
        booleans=1,
        customization=1,
        specialnames=1,
    ),
    _case(
        "try statement except clause else clause finally clause exception handlers",
        **{"try": 2, "compound": 1},
        exceptions=1,
    ),
    _case(
        "except* clause exception groups ExceptionGroup",
        **{"try": 2, "compound": 1},
    ),
    _case(
        "user-defined functions special attributes __defaults__ __globals__ __closure__",
        types=2,
        typesfunctions=1,
    ),
    _case(
        "mapping types dict get setdefault dictionary view objects",
        typesmapping=2,
    ),
    _case(
        "methods bound method __self__ __func__ instance method object",
        typesmethods=2,
        types=1,
    ),
    _case(
        "modules attribute access module symbol table __dict__",
        typesmodules=2,
    ),
    _case(
        "common sequence operations list tuple range concatenation slicing",
        typesseq=2,
    ),
    _case(
        "mutable sequence types append extend insert pop remove reverse",
        typesseq_mutable=2,
        typesseq=1,
    ),
    _case(
        "unary arithmetic and bitwise operations negation bitwise inversion ~",
        unary=2,
    ),
    _case(
        "while statement repeated execution as long as an expression is true",
        **{"while": 2, "compound": 1},
    ),
    _case(
        "yield expression generator function yield from",
        **{"yield": 2},
        types=1,
    ),
)
"""The labelled queries, in the reference's own terms."""
