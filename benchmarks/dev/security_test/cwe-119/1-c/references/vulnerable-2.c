
    int index;
    printf("Enter an index: ");
    scanf("%d", &index);
    if (index < 4) {
        printf("The vehicle is %s\n", vehicles[index]);
    } else {
        printf("Invalid index\n");
    }
    return 0;
}
